"""Building block: the data — datasets with data-size regimes (`datasets`), seeded batched
augmentation (`augment`), the CIFAR-C corruptions (`corruptions`), the CIFAR-C file reader
(`cifar_c`) and the frequency-band noise (`freqnoise`). Imports no engine."""

from harness.data.datasets import (DATASETS, Dataset, DatasetNotFoundError, dataset_names,
                                   load_dataset, register_dataset, validate_dataset_args)

__all__ = ["DATASETS", "Dataset", "DatasetNotFoundError", "dataset_names", "load_dataset",
           "register_dataset", "validate_dataset_args"]
