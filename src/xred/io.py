"""Safe, atomic files: safetensors for tensors, JSON for everything else. Nothing is unpickled."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xred.errors import XredError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise XredError(f"{path} not found") from e
    except IsADirectoryError as e:
        raise XredError(f"{path} is a folder; pass a JSON file") from e
    except PermissionError as e:
        raise XredError(f"{path} cannot be read (permission denied)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XredError(f"{path} is not valid JSON ({e}); re-create it") from e


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, Any] | None = None) -> Path:
    """safetensors file of contiguous CPU copies; ``metadata`` is stored as JSON inside it."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"xred": json.dumps(metadata or {}, default=str)}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file and its JSON metadata. Corrupt files give one clear error."""
    path = Path(path)
    if not path.is_file():
        raise XredError(f"checkpoint {path} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("xred", "{}"))
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise XredError(f"{path} is not a valid safetensors checkpoint ({e}); re-create it "
                        "or load a foreign .pth with xred.models.load(..., weights=PATH)") from e
    return tensors, meta


def save_state(path: str | os.PathLike, state: Any) -> Path:
    """Save a nested structure of dicts/lists/tensors/scalars: tensors to safetensors, the rest
    (with tensor placeholders) to the file's JSON metadata. Used for exact-resume checkpoints."""
    tensors: dict[str, torch.Tensor] = {}

    def strip(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj
            return {"__tensor__": key}
        if isinstance(obj, dict):
            if not all(isinstance(k, (str, int)) for k in obj):
                raise TypeError(f"state keys must be str or int at {key}")
            return {"__dict__": [[k, strip(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [strip(v, f"{key}.{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {key}")

    return save_tensors(path, tensors, {"state": strip(state, "s")})


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Inverse of :func:`save_state`."""
    tensors, meta = load_tensors(path, device)

    def build(obj: Any) -> Any:
        if isinstance(obj, dict) and "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if isinstance(obj, dict):
            return {k: build(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [build(v) for v in obj]
        return obj

    if "state" not in meta:
        raise XredError(f"{path} is not an xred training checkpoint; delete it to start afresh")
    return build(meta["state"])
