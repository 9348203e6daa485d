"""The objective (salt/losses.py) and the built-in loss plugins (salt_losses, salt_vicreg)."""

from __future__ import annotations

import pytest
import torch

from salt.losses import Objective, masked_loss
from salt.masking import MaskGroup
from salt.registry import UnknownNameError, losses
from salt_vicreg import covariance_penalty, variance_penalty


def pair(seed: int = 0, shape=(2, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def test_builtin_losses_are_registered():
    assert {"mse", "l1", "cosine", "vicreg"} <= set(losses.names())
    assert all(losses.get(n).description for n in losses.names())


# --- regression terms against hand computation -----------------------------------------------


def test_mse_is_the_mean_squared_error():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 8.0]]])
    total, terms = Objective("mse")(pred, target)
    assert set(terms) == {"mse"}
    expected = (0 + 4 + 9 + 16) / 4
    assert terms["mse"].item() == pytest.approx(expected)
    assert total.item() == pytest.approx(expected)


def test_l1_is_the_mean_absolute_error():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 8.0]]])
    total, terms = Objective("l1")(pred, target)
    assert set(terms) == {"l1"}
    assert total.item() == pytest.approx((0 + 2 + 3 + 4) / 4)


def test_cosine_is_one_minus_similarity_per_token():
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]]])
    pred = torch.tensor([[[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [4.0, 3.0]]])
    _, terms = Objective("cosine")(pred, target)
    # same direction 0, orthogonal 1, opposite 2, and 1 - 24/25 for the last token
    assert terms["cosine"].item() == pytest.approx((0 + 1 + 2 + 1 / 25) / 4)


@pytest.mark.parametrize("name", ["mse", "l1", "cosine"])
def test_regression_terms_match_torch_on_random_data(name):
    pred, target = pair()
    _, terms = Objective(name)(pred, target)
    expected = {
        "mse": (pred - target).square().mean(),
        "l1": (pred - target).abs().mean(),
        "cosine": (1 - (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1))).mean(),
    }[name]
    torch.testing.assert_close(terms[name], expected)
    assert Objective(name)(target, target)[0].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["mse", "l1", "cosine"])
def test_weight_option_scales_the_term(name):
    pred, target = pair(1)
    plain = Objective(name)(pred, target)[0]
    scaled = Objective(name, {name: {"weight": 2.5}})(pred, target)[0]
    torch.testing.assert_close(scaled, 2.5 * plain)


def test_low_precision_inputs_are_computed_in_float32():
    pred, target = pair(2)
    total, terms = Objective("mse+vicreg")(pred.bfloat16(), target.bfloat16())
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())


def test_mse_gradient_reaches_the_predictions():
    pred, target = pair(3)
    pred.requires_grad_(True)
    Objective("mse")(pred, target)[0].backward()
    torch.testing.assert_close(pred.grad, 2 * (pred - target).detach() / pred.numel())


# --- VICReg terms ----------------------------------------------------------------------------


def test_mse_plus_vicreg_reports_each_term_and_their_sum():
    pred, target = pair(4, shape=(3, 7, 5))
    total, terms = Objective("mse+vicreg")(pred, target)
    assert list(terms) == ["mse", "vicreg_var", "vicreg_cov"]
    torch.testing.assert_close(total, terms["mse"] + terms["vicreg_var"] + terms["vicreg_cov"])
    x = pred.reshape(-1, 5)  # every predicted token of the batch is one sample
    torch.testing.assert_close(terms["vicreg_var"], variance_penalty(x))
    torch.testing.assert_close(terms["vicreg_cov"], 0.04 * covariance_penalty(x))


def test_spaces_around_plus_are_ignored():
    pred, target = pair(5)
    a = Objective("mse+vicreg")(pred, target)[0]
    b = Objective(" mse + vicreg ")(pred, target)[0]
    torch.testing.assert_close(a, b)


def test_variance_penalty_is_zero_when_every_dim_spreads_enough():
    x = hadamard(16)[:, 1:] * 1.5  # every column: +-1.5, std 1.55
    assert variance_penalty(x).item() == 0.0
    assert variance_penalty(pair(8, shape=(4096, 8))[0] * 3).item() == 0.0


def test_variance_penalty_is_positive_for_collapsed_dims():
    collapsed = torch.ones(32, 4)
    # std is sqrt(eps) = 0.01 in every dim: the hinge gives 0.99
    assert variance_penalty(collapsed).item() == pytest.approx(0.99)
    half = torch.cat([hadamard(32)[:, 1:3] * 2, torch.full((32, 2), 7.0)], dim=1)
    assert variance_penalty(half).item() == pytest.approx(0.99 / 2)
    # a shrunk spread: std 0.5 in every dim
    small = hadamard(32)[:, 1:5] * 0.5 * (31 / 32) ** 0.5
    assert variance_penalty(small, eps=0.0).item() == pytest.approx(0.5)


def test_covariance_penalty_is_zero_for_decorrelated_dims():
    x = hadamard(16)[:, 1:9]  # centred, mutually orthogonal columns
    assert covariance_penalty(x).item() == pytest.approx(0.0, abs=1e-7)
    assert covariance_penalty(torch.eye(8) - 1 / 8).item() > 0  # eye is not decorrelated data


def test_covariance_penalty_is_the_scaled_squared_off_diagonal():
    a = hadamard(8)[:, 1]
    x = torch.stack([a, a], dim=1)  # two identical columns of variance 8/7
    var = 8 / 7
    # off-diagonal covariances are both var; sum of squares over D = 2
    assert covariance_penalty(x).item() == pytest.approx(2 * var**2 / 2)
    correlated = pair(9, shape=(256, 4))[0]
    correlated[:, 1] = correlated[:, 0] + 0.1 * correlated[:, 1]
    assert covariance_penalty(correlated).item() > 0.5


def test_options_are_routed_to_their_term():
    pred, target = pair(6)
    no_cov = Objective("mse+vicreg", {"vicreg": {"cov_weight": 0}})(pred, target)[1]
    assert no_cov["vicreg_cov"].item() == 0.0
    base = Objective("mse+vicreg")(pred, target)[1]
    heavy = Objective("mse+vicreg", {"vicreg": {"var_weight": 3.0}})(pred, target)[1]
    torch.testing.assert_close(heavy["vicreg_var"], 3 * base["vicreg_var"])
    torch.testing.assert_close(heavy["mse"], base["mse"])
    wider = Objective("mse+vicreg", {"vicreg": {"target_std": 10.0}})(pred, target)[1]
    assert wider["vicreg_var"] > base["vicreg_var"]


# --- errors ----------------------------------------------------------------------------------


def test_options_for_a_term_not_in_the_spec_are_rejected():
    with pytest.raises(ValueError, match=r"settings for \['vicreg'\], which 'mse' does not use"):
        Objective("mse", {"vicreg": {"cov_weight": 0}})


def test_unknown_option_names_the_term_and_option():
    with pytest.raises(ValueError, match=r"bad loss.options.vicreg \{'cov_weigth': 0\}") as info:
        Objective("mse+vicreg", {"vicreg": {"cov_weigth": 0}})
    assert "cov_weigth" in str(info.value)


def test_unknown_loss_name_lists_the_registered_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'cosine'") as info:
        Objective("mse+cosin")
    listed = str(info.value).split("Registered losses: ")[1].split(".")[0].split(", ")
    assert {"cosine", "l1", "mse", "vicreg"} <= set(listed) and listed == sorted(listed)


@pytest.mark.parametrize("spec", ["", "+", " + "])
def test_empty_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="names no loss"):
        Objective(spec)


@pytest.mark.parametrize("name", ["mse", "l1", "cosine", "vicreg"])
def test_terms_take_no_spec_argument(name):
    with pytest.raises(ValueError, match=f"loss '{name}' takes no argument"):
        Objective(f"{name}:2")


def test_two_terms_with_one_name_are_rejected():
    pred, target = pair(7)
    with pytest.raises(ValueError, match="both named 'mse'"):
        Objective("mse+mse")(pred, target)


# --- target normalization (loss.target_norm) -------------------------------------------------


def test_instance_norm_standardizes_each_channel_over_a_clips_tokens():
    gen = torch.Generator().manual_seed(0)
    # A clip-constant offset per channel (its "appearance") on top of varying tokens.
    targets = torch.randn(3, 16, 4, generator=gen) * 2 + torch.randn(3, 1, 4, generator=gen) * 10
    normed = Objective("mse", target_norm="instance").normalize(targets)
    torch.testing.assert_close(normed.mean(dim=1), torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        normed.var(dim=1, unbiased=False), torch.ones(3, 4), atol=1e-4, rtol=0
    )
    # The same tokens on another clip-constant background give the same targets.
    shifted = targets + torch.randn(3, 1, 4, generator=gen) * 5
    torch.testing.assert_close(
        Objective("mse", target_norm="instance").normalize(shifted), normed, atol=1e-4, rtol=0
    )


def test_layer_norm_standardizes_each_token_over_its_channels():
    gen = torch.Generator().manual_seed(1)
    targets = torch.randn(2, 5, 8, generator=gen) * 3 + 1
    normed = Objective("mse", target_norm="layer").normalize(targets)
    torch.testing.assert_close(normed.mean(dim=-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        normed.var(dim=-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=0
    )


def test_no_target_norm_leaves_the_targets_untouched():
    targets = torch.randn(2, 5, 8)
    assert Objective("mse").normalize(targets) is targets


def test_a_channel_constant_over_a_clip_becomes_zeros_not_nan():
    targets = torch.ones(1, 6, 2)
    targets[0, :, 1] = torch.arange(6.0)
    normed = Objective("mse", target_norm="instance").normalize(targets.half())
    assert normed.dtype == torch.float32 and torch.isfinite(normed).all()
    assert torch.count_nonzero(normed[0, :, 0]) == 0


def test_masked_loss_normalizes_the_whole_clip_before_picking_tokens():
    """Statistics over every token of the clip, not only the masked ones: the two target
    tokens alone would standardize to +-1, the clip's six give other values."""
    targets = torch.arange(6.0).view(1, 6, 1)
    masks = [MaskGroup(torch.tensor([[0]]), torch.tensor([[4, 5]]))]
    loss, _ = masked_loss(
        [torch.zeros(1, 2, 1)], targets, masks, Objective("mse", target_norm="instance")
    )
    z = (torch.tensor([4.0, 5.0]) - 2.5) / torch.tensor(17.5 / 6).sqrt()
    assert loss.item() == pytest.approx(z.square().mean().item(), rel=1e-5)


def test_an_unknown_target_norm_names_the_choices():
    with pytest.raises(ValueError, match=r"loss.target_norm must be one of none, layer, instance"):
        Objective("mse", target_norm="batch")
