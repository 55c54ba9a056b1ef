"""Faces: crop schemes (and, with the faces issue, detection and alignment)."""
