"""The loader of the official reference fixtures (``../shared/fixtures``) and its failure message."""

import pytest
import torch
from diffcore.testing import load_official_case, official_cases


def test_every_package_has_cases_and_each_loads_into_its_groups():
    for package in ("diff-resnet", "difformer", "dianet", "pdiff", "diffclassify"):
        names = official_cases(package)
        if not names:
            pytest.skip("official reference fixtures not available")
        for name in names:
            case = load_official_case(package, name)
            assert case.outputs, f"{package}/{name} has no outputs"
            floats = [v for v in case.state.values() if v.is_floating_point()]
            assert all(v.dtype == case.dtype for v in floats), f"{package}/{name}: state not cast"


def test_bfloat16_state_is_cast_and_state_refs_are_followed():
    case = load_official_case("diffclassify", "myunet")
    assert case.meta["state_storage_dtype"] == "bfloat16" and case.dtype == torch.float64
    table = load_official_case("diffclassify", "time_table").outputs["time_embed_weight"]
    torch.testing.assert_close(case.state["time_embed.weight"], table.to(torch.float64), rtol=0, atol=0)


def test_a_difference_names_the_case_the_output_and_the_worst_element():
    case = load_official_case("pdiff", "new_ae")
    expected = case.outputs["recon"]
    case.assert_close("recon", expected.clone(), expected, atol=0.0)
    wrong = expected.clone()
    wrong.view(-1)[5] += 0.5
    with pytest.raises(AssertionError, match=r"official case pdiff/new_ae, recon: max \|diff\| 0\.5 .* at \("):
        case.assert_close("recon", wrong, expected, atol=1e-12)
    with pytest.raises(AssertionError, match="shape"):
        case.assert_close("recon", expected[:1], expected, atol=1.0)
