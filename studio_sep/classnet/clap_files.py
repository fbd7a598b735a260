"""Where LAION-CLAP's files come from: the checkpoint and the roberta-base tokenizer folder,
resolved from an argument, else an environment variable, else the user's config file, and
checked before any model is built (no downloads, ever)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from studio_sep.util.errors import InputError

#: Size of roberta-base's vocabulary (vocab.json entries; config.json's vocab_size).
ROBERTA_VOCAB_SIZE = 50265
CHECKPOINT_ENV = "STUDIO_SEP_CLAP_CHECKPOINT"
ROBERTA_ENV = "STUDIO_SEP_ROBERTA_DIR"
CHECKPOINT_OPTION = "--clap-checkpoint"
ROBERTA_OPTION = "--roberta-dir"
CONFIG_KEYS = ("checkpoint", "roberta")
ROBERTA_FILES = ("vocab.json", "merges.txt", "config.json")


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/studio-sep/clap.toml`` (``~/.config/studio-sep/clap.toml`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "studio-sep" / "clap.toml"


def _how_to_supply(key: str, config_path: Path) -> str:
    if key == "checkpoint":
        option, env = CHECKPOINT_OPTION, CHECKPOINT_ENV
    else:
        option, env = ROBERTA_OPTION, ROBERTA_ENV
    return f"pass {option} PATH, set {env}=PATH, or set {key} = \"PATH\" in {config_path}"


@dataclass(frozen=True)
class ClapFiles:
    """Where the CLAP checkpoint and the RoBERTa tokenizer folder were found.

    ``*_source`` says which setting gave each path: ``"argument"``, the environment
    variable's name, or ``"config <path>"``.
    """

    checkpoint: Path
    roberta_dir: Path
    checkpoint_source: str
    roberta_source: str


def _read_config(config_path: Path) -> dict[str, Path]:
    if not config_path.is_file():
        return {}
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(config_path, None, f"cannot read the CLAP config: {exc}",
                         f"write TOML with the keys {', '.join(CONFIG_KEYS)}") from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(config_path, unknown[0], "unknown key", f"use only {', '.join(CONFIG_KEYS)}")
    paths = {}
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise InputError(config_path, key, f"expected a path string, got {value!r}",
                             f'write {key} = "PATH"')
        paths[key] = (config_path.parent / Path(value).expanduser()).resolve()
    return paths


def resolve_clap_files(checkpoint: str | os.PathLike | None = None,
                       roberta: str | os.PathLike | None = None, *,
                       config_path: str | os.PathLike | None = None,
                       environ: Mapping[str, str] | None = None) -> ClapFiles:
    """Find the CLAP checkpoint and the RoBERTa folder: argument > environment > config.

    Parameters
    ----------
    checkpoint, roberta : path-like, optional
        Explicit paths (the CLI's ``--clap-checkpoint`` / ``--roberta-dir``).
    config_path : path-like, optional
        The config file; :func:`default_config_path` when not given. A missing file is
        no error (it is only the last resort).
    environ : mapping, optional
        The environment to read (``os.environ`` when not given).

    Returns
    -------
    ClapFiles
        The checkpoint file and the folder holding ``vocab.json``, ``merges.txt`` and
        ``config.json`` (a snapshot inside a Hugging Face cache folder is resolved).

    Raises
    ------
    InputError
        Either is not given anywhere, does not exist, or the folder lacks a file; the
        message names the file and the option, variable and config key that set it.
    """
    environ = os.environ if environ is None else environ
    config_path = default_config_path() if config_path is None else Path(config_path)
    config = None
    found: dict[str, tuple[Path, str]] = {}
    for key, given, env in (("checkpoint", checkpoint, CHECKPOINT_ENV), ("roberta", roberta, ROBERTA_ENV)):
        if given is not None and str(given):
            found[key] = (Path(given).expanduser(), "argument")
        elif environ.get(env):
            found[key] = (Path(environ[env]).expanduser(), env)
        else:
            config = _read_config(config_path) if config is None else config
            if key not in config:
                what = "CLAP checkpoint (e.g. music_audioset_epoch_15_esc_90.14.pt)" if key == "checkpoint" \
                    else "RoBERTa tokenizer folder (roberta-base's vocab.json, merges.txt, config.json)"
                raise InputError(None, key, f"no {what} given", _how_to_supply(key, config_path))
            found[key] = (config[key], f"config {config_path}")
    ckpt_path, ckpt_source = found["checkpoint"]
    if not ckpt_path.is_file():
        raise InputError(ckpt_path, None, f"CLAP checkpoint not found (from {ckpt_source})",
                         _how_to_supply("checkpoint", config_path))
    rob_path, rob_source = found["roberta"]
    return ClapFiles(ckpt_path, _roberta_folder(rob_path, rob_source, config_path), ckpt_source, rob_source)


def _roberta_folder(path: Path, source: str, config_path: Path) -> Path:
    """The folder with the RoBERTa files: ``path`` itself or a snapshot of a Hugging Face cache."""
    fix = _how_to_supply("roberta", config_path)
    if not path.is_dir():
        raise InputError(path, None, f"RoBERTa tokenizer folder not found (from {source})", fix)
    if any((path / name).exists() for name in ROBERTA_FILES):
        candidates = [path]
    else:
        repo = path / "models--roberta-base" if (path / "models--roberta-base").is_dir() else path
        snapshots = repo / "snapshots"
        candidates = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else [path]
        ref = repo / "refs" / "main"
        if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
            candidates.insert(0, snapshots / ref.read_text().strip())
        complete = [p for p in candidates if all((p / name).is_file() for name in ROBERTA_FILES)]
        candidates = complete[:1] or candidates[:1] or [path]
    folder = candidates[0]
    for name in ROBERTA_FILES:
        if not (folder / name).is_file():
            raise InputError(folder / name, None, f"RoBERTa tokenizer file missing (folder from {source})",
                             f"put roberta-base's {', '.join(ROBERTA_FILES)} there; {fix}")
    return folder


def check_vocab(folder: Path, size: int) -> None:
    if size != ROBERTA_VOCAB_SIZE:
        raise InputError(folder / "vocab.json", None,
                         f"tokenizer has {size} tokens, not roberta-base's {ROBERTA_VOCAB_SIZE} (a fallback "
                         "tokenizer would give every prompt the same embedding)",
                         "supply the vocab.json and merges.txt of roberta-base")
