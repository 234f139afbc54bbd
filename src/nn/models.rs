//! Reference models of the course, built from the layers, with PyTorch's `state_dict`
//! names (a `Sequential`, children numbered by position).

use super::conv::{BatchNorm2d, Conv2d, Dropout2d, MaxPool2d};
use super::module::{Dropout, Flatten, Linear, ReLU, Sequential};

/// LeNet as the PyTorch MNIST example trains it: `Conv2d(1,10,k5) -> ReLU ->
/// MaxPool2d(2) -> Conv2d(10,20,k5) -> ReLU -> MaxPool2d(2) -> Flatten ->
/// Linear(320,10)`, on `[N, 1, 28, 28]` images (8,490 parameters).
pub fn lenet() -> Sequential {
    Sequential::new()
        .push(Conv2d::new(1, 10, 5))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Conv2d::new(10, 20, 5))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(Linear::new(320, 10))
}

/// LeNet with batch norm after each convolution and dropout: `Conv2d(1,10,k5) ->
/// BatchNorm2d(10) -> ReLU -> MaxPool2d(2) -> Conv2d(10,20,k5) -> BatchNorm2d(20) ->
/// Dropout2d(0.25) -> ReLU -> MaxPool2d(2) -> Flatten -> Dropout(0.5) ->
/// Linear(320,10)`. Training and evaluation programs differ (batch vs running
/// statistics, dropout on vs off).
pub fn lenet_bn() -> Sequential {
    Sequential::new()
        .push(Conv2d::new(1, 10, 5))
        .push(BatchNorm2d::new(10))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Conv2d::new(10, 20, 5))
        .push(BatchNorm2d::new(20))
        .push(Dropout2d(0.25))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(Dropout(0.5))
        .push(Linear::new(320, 10))
}
