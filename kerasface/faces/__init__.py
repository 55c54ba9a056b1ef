"""Faces: detection (MTCNN), five-point alignment and the named crop schemes of every recipe.

Every recipe and every prediction starts from a face crop; this package is the one place that
makes it, so converters and `predict` share the code and a model sees at inference exactly the
crop it was trained on.

    from kerasface.faces import detect_faces, detect_and_crop, apply_crop, load_image

    image = load_image("photo.jpg")                 # RGB uint8, upright; ImageError names the file
    faces = detect_faces(image)                     # [Face(box, score, landmarks)], best first
    crop, points = apply_crop("wang_112x96", image, faces[0].points)
    crop, points = detect_and_crop(image, "gnet_aligned_face", rule="centre")   # or None

Modules
    images   load_image / to_rgb_uint8 / find_images / expand_paths / save_image, ImageError
    detect   Face, detect_faces, detect_faces_batch, select_faces / pick_face (rules "all",
             "centre", "largest", "box"), crop_face, detect_and_crop, draw_faces
    align    template, similarity_transform (Umeyama, NumPy) and similarity_transform_tf,
             align_np (cv2.warpAffine) and align_tf (ImageProjectiveTransformV3), which agree
    crops    CROPS registry, register_crop, apply_crop, crop_box, to_grayscale, and the schemes:
             original, nose_centred_150, bknet_48_gray, gnet_aligned_face, gnet_unaligned_face,
             gnet_unaligned_no_neck, gnet_unaligned_with_neck, gnet_aligned_mouth_cheek,
             wang_112x96, vggface_224

Command line
    python -m kerasface.faces detect PATH... [--annotate DIR] [--crop SCHEME --out DIR]

Heavy dependencies (TensorFlow, mtcnn, OpenCV) are imported on first use, so importing this
package is cheap.
"""

from kerasface.faces.align import (
    LANDMARK_NAMES,
    REFERENCE_112x96,
    align_np,
    align_tf,
    similarity_transform,
    similarity_transform_tf,
    template,
    transform_points,
    warp_affine_np,
    warp_affine_tf,
)
from kerasface.faces.crops import (
    CROPS,
    CropScheme,
    apply_crop,
    crop_box,
    face_box_from_landmarks,
    register_crop,
    to_grayscale,
)
from kerasface.faces.detect import (
    RULES,
    Face,
    crop_face,
    detect_and_crop,
    detect_faces,
    detect_faces_batch,
    draw_faces,
    get_detector,
    pick_face,
    select_faces,
)
from kerasface.faces.images import (
    ImageError,
    expand_paths,
    find_images,
    load_image,
    save_image,
    to_rgb_uint8,
)

__all__ = [
    "CROPS",
    "CropScheme",
    "Face",
    "ImageError",
    "LANDMARK_NAMES",
    "REFERENCE_112x96",
    "RULES",
    "align_np",
    "align_tf",
    "apply_crop",
    "crop_box",
    "crop_face",
    "detect_and_crop",
    "detect_faces",
    "detect_faces_batch",
    "draw_faces",
    "expand_paths",
    "face_box_from_landmarks",
    "find_images",
    "get_detector",
    "load_image",
    "pick_face",
    "register_crop",
    "save_image",
    "select_faces",
    "similarity_transform",
    "similarity_transform_tf",
    "template",
    "to_grayscale",
    "to_rgb_uint8",
    "transform_points",
    "warp_affine_np",
    "warp_affine_tf",
]
