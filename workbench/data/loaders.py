"""One import for every dataset loader and helper (kept for existing imports).

The code lives in typed pieces, one job each:
  checks.py        option checks shared by every loader
  splits.py        seeded stratified splits, train-only standardisation, tabular and char-LM builders
  validate.py      `validate_dataset`: the Dataset contract
  user_split.py    the user's own split: split column, separate files, index files
  csv_source.py    source = "csv"       text_source.py    source = "text"
  tensor_source.py source = "tensors"   image_source.py   source = "images" (Pillow)
  sources.py       `load_dataset` (a plan's dataset table -> Dataset) and source = "callable"
"""

from __future__ import annotations

from workbench.data.checks import (check_bool, check_float, check_fractions, check_int_list,
                                   check_optional_positive_int, check_positive_int, check_seed, existing_file,
                                   reject_unknown_options)
from workbench.data.csv_source import MISSING, load_csv, read_csv_rows
from workbench.data.image_source import load_image_folder
from workbench.data.sources import LOADERS, SOURCES, load_callable, load_dataset
from workbench.data.splits import (UNK, char_lm_dataset, lm_windows, random_split_note, split_documents, split_indices,
                                   tabular_dataset, train_standardize)
from workbench.data.tensor_source import SPLIT_KEYS, from_tensors, load_tensor_file
from workbench.data.text_source import load_text
from workbench.data.user_split import resolve_user_split
from workbench.data.validate import MODALITIES, TASKS, validate_dataset

__all__ = [
    "check_bool", "check_float", "check_fractions", "check_int_list", "check_optional_positive_int",
    "check_positive_int", "check_seed", "existing_file", "reject_unknown_options", "MISSING", "load_csv",
    "read_csv_rows", "load_image_folder", "LOADERS", "SOURCES", "load_callable", "load_dataset", "UNK",
    "char_lm_dataset", "lm_windows", "random_split_note", "split_documents", "split_indices", "tabular_dataset",
    "train_standardize", "SPLIT_KEYS", "from_tensors", "load_tensor_file", "load_text", "resolve_user_split",
    "MODALITIES", "TASKS", "validate_dataset",
]
