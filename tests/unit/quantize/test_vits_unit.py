"""SoVITS module unit tests that need no golden set: loading rules, the building blocks against direct
formulas, the numpy spectrogram against torch, and dynamic axes of the exported graphs."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from daemon.model.spectrogram import spectrogram as np_spectrogram
from quantize.graphs import export_graph
from quantize.vits import (
    ConvAttention,
    SovitsConfig,
    SynthesizerTrn,
    decoded_frames,
    sovits_graphs,
    spectrogram,
    stretch,
)


def tiny_config(version: str = "v2Pro") -> SovitsConfig:
    return SovitsConfig(
        version=version,
        spec_channels=1025,
        hop_length=8,
        sampling_rate=32000,
        inter_channels=8,
        hidden_channels=16,
        filter_channels=16,
        n_heads=2,
        n_layers=2,
        kernel_size=3,
        resblock="1",
        resblock_kernel_sizes=[3, 5],
        resblock_dilation_sizes=[[1, 3], [1, 3]],
        upsample_rates=[4, 2],
        upsample_initial_channel=16,
        upsample_kernel_sizes=[8, 4],
        gin_channels=512 if version == "v2" else 8,
    )


@pytest.fixture(scope="module")
def model() -> SynthesizerTrn:
    torch.manual_seed(0)
    return SynthesizerTrn(tiny_config()).eval()


def test_strict_load_names_missing_key(model: SynthesizerTrn) -> None:
    weights = {k: v.half() for k, v in model.state_dict().items()}
    del weights["enc_p.mrte.c_post.bias"]
    with pytest.raises(RuntimeError, match=r"enc_p\.mrte\.c_post\.bias"):
        SynthesizerTrn(model.cfg).load_state_dict(weights)


def test_training_only_keys_dropped_unknown_rejected(model: SynthesizerTrn) -> None:
    weights = dict(model.state_dict())
    weights["quantizer.vq.layers.0._codebook.inited"] = torch.ones(1)
    weights["quantizer.vq.layers.0._codebook.cluster_size"] = torch.zeros(1024)
    weights["quantizer.vq.layers.0._codebook.embed_avg"] = torch.zeros(1024, 768)
    SynthesizerTrn(model.cfg).load_state_dict(weights)
    weights["dec.surprise"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"dec\.surprise"):
        SynthesizerTrn(model.cfg).load_state_dict(weights)


def test_v1_sizes_follow_version() -> None:
    cfg = tiny_config("v1")
    assert cfg.n_symbols == 322 and cfg.ref_bins == 1025 and not cfg.is_pro
    assert tiny_config("v2ProPlus").ref_bins == 704
    with pytest.raises(ValueError, match="v3"):
        dataclasses.replace(tiny_config(), version="v3")


def test_decoded_frames() -> None:
    assert decoded_frames(18, 1.0) == 36
    assert decoded_frames(18, 1.3) == 28  # int(36 / 1.3) + 1, the golden speed-1.3 case
    assert decoded_frames(10, 0.5) == 41


def test_numpy_spectrogram_matches_torch() -> None:
    rng = np.random.default_rng(0)
    for n in (705, 3000, 41600):
        wav = np.clip(rng.standard_normal((1, n)) * 0.3, -1, 1).astype(np.float32)
        want = spectrogram(torch.from_numpy(wav)).numpy()
        got = np_spectrogram(wav)
        assert got.shape == want.shape == (1, 1025, n // 640) and got.dtype == np.float32
        diff = np.abs(got - want).max()
        assert diff <= 1e-4 * max(1.0, np.abs(want).max() / 100), f"max abs diff {diff:.3g}"


def test_stretch_is_linear_interpolate_and_identity_at_same_length() -> None:
    x = torch.randn(1, 3, 37)
    assert torch.equal(stretch(x, 37), x)
    for n_out in (1, 20, 29, 38, 75, 300):
        diff = (stretch(x, n_out) - F.interpolate(x, size=n_out, mode="linear")).abs().max()
        assert diff <= 1e-6, f"{n_out}: max abs diff {diff:.3g}"


def test_relative_attention_band_matches_direct_formula() -> None:
    torch.manual_seed(1)
    attn = ConvAttention(8, 8, 2, window=2).eval()
    with torch.no_grad():
        attn.emb_rel_k.normal_()
        attn.emb_rel_v.normal_()
    for length in (1, 2, 3, 9):
        x = torch.randn(1, 8, length)
        with torch.no_grad():
            q = attn._heads(attn.conv_q(x)) / 2.0  # sqrt(head_dim=4)
            k, v = attn._heads(attn.conv_k(x)), attn._heads(attn.conv_v(x))
            rel_k, rel_v = torch.zeros(length, length, 4), torch.zeros(length, length, 4)
            for i in range(length):
                for j in range(length):
                    if abs(j - i) <= 2:
                        rel_k[i, j], rel_v[i, j] = attn.emb_rel_k[0, j - i + 2], attn.emb_rel_v[0, j - i + 2]
            scores = q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, rel_k)
            p = scores.softmax(-1)
            out = p @ v + torch.einsum("bhij,ijd->bhid", p, rel_v)
            want = attn.conv_o(out.transpose(2, 3).reshape(1, 8, length))
            diff = (attn(x, x) - want).abs().max()
        assert diff <= 1e-5, f"length {length}: max abs diff {diff:.3g}"


def test_exported_graphs_take_other_lengths(model: SynthesizerTrn, tmp_path) -> None:
    sessions = {}
    for spec in sovits_graphs(model):
        path = export_graph(spec, tmp_path)
        sessions[spec.name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(2)

    ssl = torch.randn(1, 768, 17, generator=g)
    codes = sessions["sovits_extract_latent"].run(None, {"ssl_content": ssl.numpy()})[0]
    np.testing.assert_array_equal(codes, model.extract_latent(ssl).numpy())

    spec, sv = torch.rand(1, 1025, 7, generator=g), torch.randn(1, 20480, generator=g)
    ge = sessions["sovits_ref_style"].run(None, {"refer_spec": spec.numpy(), "sv_emb": sv.numpy()})[0]
    want_ge = model.ref_style(spec, sv)
    np.testing.assert_allclose(ge, want_ge.numpy(), atol=1e-4, err_msg="ge")

    for t, n, speed in ((1, 1, 1.0), (5, 3, 0.8), (23, 11, 1.3)):
        codes = torch.randint(0, 1024, (1, 1, t), generator=g)
        text = torch.randint(0, model.cfg.n_symbols, (1, n), generator=g)
        noise = torch.randn(1, model.cfg.inter_channels, decoded_frames(t, speed), generator=g)
        want = model.decode(codes, text, want_ge, 0.5, speed, noise).numpy()
        got = sessions["sovits_decoder"].run(
            None,
            {
                "codes": codes.numpy(),
                "text": text.numpy(),
                "ge": want_ge.numpy(),
                "noise": noise.numpy(),
                "noise_scale": np.array([0.5], np.float32),
            },
        )[0]
        assert got.shape == (1, 1, decoded_frames(t, speed) * 8)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"audio T={t} speed={speed}")
