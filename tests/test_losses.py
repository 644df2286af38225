import math

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rcedetect.models.losses import cross_entropy, reverse_cross_entropy, reverse_label_vector


def test_rce_equals_cross_entropy_against_reverse_labels():
    torch.manual_seed(0)
    z = torch.randn(16, 10) * 5
    y = torch.randint(0, 10, (16,))
    expected = F.cross_entropy(z, reverse_label_vector(y, 10))
    assert torch.allclose(reverse_cross_entropy(z, y), expected, atol=1e-6)
    # and the form of the original code: (sum_i y_i log p_i - sum_i log p_i) / (L-1)
    log_p = torch.log_softmax(z.double(), 1)
    coded = ((F.one_hot(y, 10) * log_p).sum(1) - log_p.sum(1)) / 9
    assert torch.allclose(reverse_cross_entropy(z, y).double(), coded.mean(), atol=1e-6)


def test_reverse_label_vector():
    r = reverse_label_vector(torch.tensor([2]), 10)[0]
    assert r[2] == 0 and torch.allclose(r.sum(), torch.tensor(1.0)) and torch.allclose(r[0], torch.tensor(1 / 9))


def test_rce_gradient_is_softmax_minus_reverse_label():
    torch.manual_seed(1)
    z = torch.randn(8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    reverse_cross_entropy(z, y).backward()
    expected = (torch.softmax(z, 1) - reverse_label_vector(y, 10)) / 8
    assert torch.allclose(z.grad, expected, atol=1e-6)


def test_rce_is_finite_for_extreme_logits():
    z = torch.tensor([[1e4, -1e4] + [0.0] * 8])
    assert torch.isfinite(reverse_cross_entropy(z, torch.tensor([0])))
    assert torch.isfinite(reverse_cross_entropy(z, torch.tensor([1])))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 9),
    st.floats(3.0, 25.0),
    st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=10, max_size=10),
)
def test_theorem2_bounds(y, depth, noise):
    """Theorem 2: if ||S(Z) - R_y||_inf <= alpha << 1/L, then ||S(-Z) - 1_y||_inf <= alpha (L-1)^2 and any two
    non-maximal entries of S(-Z) differ by at most 2 alpha^2 (L-1)^2. Logits are drawn near the RCE optimum."""
    L = 10
    z = torch.tensor(noise, dtype=torch.float64)
    z[y] = -depth
    z = z[None]
    alpha = (torch.softmax(z, 1) - reverse_label_vector(torch.tensor([y]), L).double()).abs().max().item()
    assume(alpha < 1 / (2 * L))
    reversed_p = torch.softmax(-z, 1)[0]
    one_hot = F.one_hot(torch.tensor(y), L).double()
    assert (reversed_p - one_hot).abs().max().item() <= alpha * (L - 1) ** 2 + 1e-12
    others = torch.cat([reversed_p[:y], reversed_p[y + 1 :]])
    assert (others.max() - others.min()).item() <= 2 * alpha**2 * (L - 1) ** 2 + 1e-12
    # and the RCE loss sits at or above its minimum log(L-1), reached at S(Z) = R_y
    assert reverse_cross_entropy(z, torch.tensor([y])).item() >= math.log(L - 1) - 1e-9
    assert int(reversed_p.argmax()) == y


def test_cross_entropy_matches_torch():
    z = torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(cross_entropy(z, y), F.cross_entropy(z, y))
