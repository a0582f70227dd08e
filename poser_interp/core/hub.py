"""Models named by Hugging Face hub id: `hub:ORG/NAME` or `hub:ORG/NAME@REVISION`, resolved through the normal HF cache.

Resolution never downloads when `HF_HUB_OFFLINE=1` (tests run so, on a cache folder they make themselves); otherwise
a model missing from the cache is downloaded by `huggingface_hub` as `transformers` would. The resolved folder is
a snapshot directory, so every weight file can be hashed and checked like a local checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelLoadError

HUB_PREFIX = "hub:"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_name(name: str) -> bool:
    return name.startswith(HUB_PREFIX)


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """('org/name', revision or None) of `hub:org/name[@revision]`; ModelLoadError naming the form otherwise."""
    body = name[len(HUB_PREFIX):] if is_hub_name(name) else name
    repo, _, revision = body.partition("@")
    if not _ID.match(repo) or (revision == "" and "@" in body):
        raise ModelLoadError(f"{name!r} is not a hub id: write hub:ORG/NAME or hub:ORG/NAME@REVISION")
    return repo, revision or None


def hub_name(repo_id: str, revision: str | None = None) -> str:
    return f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_hub(name: str) -> Path:
    """The local snapshot folder of a hub model (downloaded first unless offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, revision = parse_hub_name(name)
    try:
        path = snapshot_download(repo, revision=revision, local_files_only=offline())
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"{repo}{'@' + revision if revision else ''} is not in the Hugging Face cache and HF_HUB_OFFLINE=1: "
            f"download it first (`hf download {repo}`{' --revision ' + revision if revision else ''}) or unset "
            "HF_HUB_OFFLINE") from None
    except Exception as e:  # network, authorisation, unknown repo: one line naming the cause
        raise ModelLoadError(f"cannot resolve {name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return Path(path)


def hub_file(name: str, filename: str) -> Path:
    """One file of a hub model's snapshot (its config, its tokenizer), fetched alone (downloaded first unless
    offline): what a model served elsewhere (NDIF) needs here, never its weights. ModelLoadError when it is absent."""
    from huggingface_hub import hf_hub_download

    repo, revision = parse_hub_name(name)
    try:
        path = hf_hub_download(repo, filename, revision=revision, local_files_only=offline())
    except Exception as e:  # not cached offline, no such file, network, authorisation: one line naming the cause
        where = f"{repo}{'@' + revision if revision else ''}"
        raise ModelLoadError(f"cannot fetch {filename} of {where} ({type(e).__name__}): download it first (`hf "
                             f"download {repo} {filename}`{' --revision ' + revision if revision else ''}) or unset "
                             "HF_HUB_OFFLINE") from None
    return Path(path)
