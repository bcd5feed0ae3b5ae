"""docs/pyro.md runs as written (with fewer steps) and shows what it says."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "pyro.md"


def test_pyro_page_code_runs_and_trains_sigma(capsys):
    pytest.importorskip("sklearn")
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile(blocks[0].replace("range(2000)", "range(60)"), str(PAGE), "exec"), namespace)
    vae = namespace["vae"]
    start = vae.decoder.observation.init_scale
    x = namespace["x_all"]
    assert start == pytest.approx(0.5 * float(x[:500].var(0).mean().sqrt()))
    names = [k for k in namespace["pyro"].get_param_store().keys() if "observation" in k]
    assert names == []  # LV-VAE: sigma comes from the decoder's head, no parameter of its own
    assert "nats per image" in capsys.readouterr().out
    sigma = namespace["sigma"]
    assert sigma.shape == (5, 64) and float(sigma.min()) >= 0.01


def test_pyro_page_learned_prior_runs_and_trains_under_the_jit():
    pytest.importorskip("sklearn")
    import torch

    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace("range(2000)", "range(20)"), str(PAGE), "exec"), namespace)
    prior = namespace["vamp"].decoder.prior
    start = namespace["x_all"][:50]
    assert not torch.equal(prior.pseudo_inputs.detach(), start)  # trained from the data start
    assert float((prior.pseudo_inputs.detach() - start).abs().max()) < 0.1
    keys = list(namespace["pyro"].get_param_store().keys())
    assert "decoder$$$prior.pseudo_inputs" in keys
    assert not any(k.startswith("vamp") for k in keys)  # one entry per tensor
