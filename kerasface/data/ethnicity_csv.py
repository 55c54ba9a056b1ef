"""Ethnicity labels in a CSV table, for flickr_depth:ethnicity: `--dataset ethnicity_csv --root
PATH/labels.csv`, or $KERASFACE_ETHNICITY_CSV.

The format is the user's CSV (kerasface.data.csv_table: an image column, optional box, landmark
and split columns) with a multi-label column `ethnicity` whose cells list the groups a face
belongs to, separated by `|` (`white|south-asian`; empty = unknown). The nine groups are fixed
(GROUPS), not read from the table: the recipe's head has nine outputs that must mean the same
groups whichever of them a table happens to hold, so a value outside them makes its row unusable
(listed as labels.csv:LINE by the converter, like any malformed row).

GROUPS: the paper (Baumgartner and Culpepper, sec. 4.7) maps its labels "to 9 ethnicities in
accordance with ... Getty" but names eight: black, hispanic, east-asian, middle-eastern, pacific
islander, south-asian, south-east-asian and white. The ninth is not named; this recipe takes
native-american (a choice, not the paper's: the group of Getty-style ethnicity lists that the
eight leave out, "mixed race" being what a multi-label vector expresses anyway). Names are
hyphenated and sorted, as the csv reader sorts the values it finds.
"""

from __future__ import annotations

import os
from pathlib import Path

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data import csv_table

ENV_VAR = "KERASFACE_ETHNICITY_CSV"
LABEL = "ethnicity"
GROUPS = ("black", "east-asian", "hispanic", "middle-eastern", "native-american", "pacific-islander",
          "south-asian", "south-east-asian", "white")


def resolve_root(root: str | os.PathLike | None) -> Path:
    return csv_table.resolve_root(root, ENV_VAR, "ethnicity CSV table")


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    return csv_table.read_splits(root, val_fraction, seed, multilabel=LABEL, names={LABEL: GROUPS})


DATASETS.register("ethnicity_csv")(
    DatasetSpec(
        name="ethnicity_csv",
        env_var=ENV_VAR,
        labels={LABEL: {"type": "multilabel", "names": GROUPS}},
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [Path(root)],
        default_crop="vggface_224",
    )
)
