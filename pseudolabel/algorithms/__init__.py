"""Training algorithms behind one interface (`registry`): a student recipe's `algorithm = "..."`.
Importing this package is cheap (no TensorFlow): the classes load when `get_algorithm` asks."""

from pseudolabel.algorithms.registry import get_algorithm, is_online, list_algorithms, register_algorithm

__all__ = ["get_algorithm", "is_online", "list_algorithms", "register_algorithm"]
