"""Models: functions from (input shape, number of classes, hyperparameters) to a torch module."""

from fedsim.models.cnn_corn import cnn_corn
from fedsim.models.cnn_femnist import cnn_femnist
from fedsim.models.init import initialize
from fedsim.models.lenet import gn_lenet, lenet5
from fedsim.models.logreg import logreg
from fedsim.models.mlp import mlp
from fedsim.models.resnet import resnet8, resnet20

__all__ = [
    "cnn_corn",
    "cnn_femnist",
    "gn_lenet",
    "initialize",
    "lenet5",
    "logreg",
    "mlp",
    "resnet8",
    "resnet20",
]
