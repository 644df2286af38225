"""The common forms of images and labels (NumPy, uint8, channels-last, grey NHW) give the same answers as the
package's float NCHW tensors, and the ambiguous forms are still refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rcedetect
from rcedetect import InputError
from rcedetect.data.forms import as_images, as_labels


def colour_model() -> rcedetect.Classifier:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(self.body(x))

    return rcedetect.wrap(Net().eval(), head="fc")


def as_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_a_float_nchw_tensor_is_handed_back_as_the_same_object():
    x = torch.rand(2, 3, 8, 8)
    assert as_images(x, 3) is x
    y = torch.tensor([0, 1])
    assert as_labels(y) is y


def test_uint8_channels_last_numpy_is_the_float_nchw_tensor():
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 256, (4, 3, 9, 7), generator=g).float() / 255)
    got = as_images(as_uint8_nhwc(x), 3)
    assert got.dtype == torch.float32 and got.shape == (4, 3, 9, 7)
    assert torch.equal(got, x)


def test_the_shape_decides_channels_last_only_where_unambiguous():
    assert as_images(np.zeros((2, 5, 6, 3), np.float32), 3).shape == (2, 3, 5, 6)  # NHWC
    assert as_images(np.zeros((2, 3, 6, 3), np.float32), 3).shape == (2, 3, 6, 3)  # could be either: NCHW kept
    assert as_images(np.zeros((2, 5, 6, 1), np.float32), None).shape == (2, 1, 5, 6)  # grey, model unknown
    assert as_images(np.zeros((2, 5, 6), np.uint8), 1).shape == (2, 1, 5, 6)  # grey NHW gains its axis
    assert as_images(np.zeros((3, 5, 6), np.uint8), 3).shape == (3, 5, 6)  # one colour image: HWC or CHW? left
    assert as_images(np.zeros((1, 2, 2)), 1).dtype == torch.float32  # NumPy's float64 becomes float32


def test_labels_in_common_forms_become_int64():
    assert as_labels(np.array([3, 1], np.int32)).dtype == torch.int64
    assert as_labels([3, 1]).tolist() == [3, 1]
    assert as_labels(torch.tensor([3, 1], dtype=torch.int16)).dtype == torch.int64
    assert as_labels(np.array([0.5])).dtype == np.float64  # float labels are left for the check to refuse
    assert as_labels([True, False]) == [True, False]


def test_a_wrapped_model_predicts_the_same_on_uint8_nhwc_numpy():
    model = colour_model()
    x = torch.randint(0, 256, (6, 3, 10, 10)).float() / 255
    assert torch.equal(model.predict(as_uint8_nhwc(x)), model.predict(x))
    assert torch.equal(model.predict_batched(as_uint8_nhwc(x), batch_size=4), model.predict_batched(x))


def test_a_detector_fitted_and_scored_on_numpy_forms_matches_tensors(ce_classifier, synthetic):
    x = synthetic.test_images()[:80]
    y = synthetic.y_test[:80]
    grey = (x * 255).round().to(torch.uint8)[:, 0].numpy()  # MNIST-like uint8 (N, H, W)
    exact = grey.astype(np.float32)[:, None] / 255
    a = rcedetect.Detector(ce_classifier, "kd").fit(torch.from_numpy(exact[:60]), y[:60]).calibrate(
        torch.from_numpy(exact[60:]), fpr=0.1)
    b = rcedetect.Detector(ce_classifier, "kd").fit(grey[:60], y[:60].numpy().astype(np.int32)).calibrate(
        grey[60:], fpr=0.1)
    assert torch.equal(a.score(torch.from_numpy(exact)), b.score(grey))
    assert a.threshold == b.threshold
    assert torch.equal(a.predict(torch.from_numpy(exact)), b.predict(grey))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 8, 8), np.int16), "floating point"),
    (np.full((2, 3, 8, 8), 200.0, np.float32), r"\[0, 1\]"),
    (np.zeros((3, 8, 8), np.float32), "4-D"),
    (np.array([[["a"]]], dtype=object), "Python objects"),
])
def test_ambiguous_or_wrong_forms_are_refused_with_a_reason(bad, match):
    with pytest.raises(InputError, match=match):
        colour_model().predict_batched(bad)


def test_a_wrapped_model_keeps_its_mode():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert rcedetect.wrap(net.eval(), head="1").training is False
    assert rcedetect.wrap(net.train(), head="1").training is True


def test_verifying_the_split_leaves_the_users_model_in_its_mode():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    clf = rcedetect.wrap(net, head="1", input_shape=(1, 2, 2))
    assert net.training is False and clf.training is False
