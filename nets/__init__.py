"""SSTNet model, its loss and weight loading."""
from .loss import YOLOLoss
from .sstnet import Network
from .weights import LoadReport, load_weights

__all__ = ["Network", "YOLOLoss", "load_weights", "LoadReport"]
