"""Signed bundles: who made this bundle, not only whether it is intact.

`edgekit verify` checks a bundle against its manifest, which proves integrity against accidents
(truncation, copy errors, a file changed without redoing its hashes) but not authenticity:
whoever changes a weight can recompute every sha256, the reference outputs and manifest_sha256.
A signature made with a private key closes that gap: the OpenSSF `model-signing` library hashes
every file of the bundle and signs that list (a Sigstore bundle holding a DSSE envelope), and
only the holder of the private key can make a signature the public key accepts.

    edgekit keygen --out keys/                                 keys/private.pem, keys/public.pem (EC P-256)
    edgekit sign BUNDLE --key keys/private.pem                 writes BUNDLE/model.sig
    edgekit verify BUNDLE --key keys/public.pem                the manifest checks, and the signature

Key-based and offline: no Sigstore, no network. model-signing and cryptography are imported
inside the functions (the `signing` extra), so `import edgekit` and `--help` stay light.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from edgekit.errors import SigningError
from edgekit.trust.reading import not_regular, read_bytes, shown

# Inside the bundle, so it travels with the folder; model-signing is told to leave it out of the
# files it signs, and `edgekit verify` does not take it for a file added after the bundle was written.
SIGNATURE = "model.sig"
PRIVATE_KEY, PUBLIC_KEY = "private.pem", "public.pem"
INSTALL = "pip install 'edgekit[signing]'"
# A PEM key is a few hundred bytes; a signature (a Sigstore bundle listing every file's digest) a few kilobytes.
MAX_KEY_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 16 << 20
# The curves model-signing accepts (Sigstore's key specs); keygen makes P-256.
CURVES = ("secp256r1", "secp384r1", "secp521r1")


def _crypto():
    """cryptography's serialization and ec modules (a dependency of model-signing)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as e:
        raise SigningError(f"signing needs the `signing` extra ({e.name} is not installed): {INSTALL}.") from None
    return serialization, ec


def _model_signing():
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as e:  # model-signing itself, or pyopenssl, which it imports without declaring it
        raise SigningError(f"signing needs the `signing` extra ({e.name} is not installed): {INSTALL}.") from None
    return model_signing


# ---------------------------------------------------------------------------- keys

def _key_text(path: Path, role: str) -> bytes:
    if not (path.exists() or path.is_symlink()):
        raise SigningError(f"{role} key file '{shown(path)}' does not exist (looked in {shown(Path.cwd())}); fix the "
                           "path, or make a key pair with `edgekit keygen --out DIR`.")
    # a FIFO or a device in the key's place is refused unread; no PEM key is anywhere near this size
    return read_bytes(path, MAX_KEY_BYTES, f"{role} key file", "pass the PEM key file itself, or make a key pair "
                      "with `edgekit keygen --out DIR`", SigningError)


def _check_curve(key, path: Path, role: str) -> None:
    _, ec = _crypto()
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name in CURVES:
        return
    kind = f"on curve {key.curve.name}" if hasattr(key, "curve") else f"a {type(key).__name__.lstrip('_')}"
    raise SigningError(f"{role} key '{path}' is {kind}; model-signing signs with elliptic-curve keys on "
                       f"{', '.join(CURVES)}: make a pair with `edgekit keygen --out DIR`.")


def load_private_key(path: str | Path):
    """The private key in a PEM file, checked to be one model-signing signs with; SigningError says why not."""
    serialization, _ = _crypto()
    path = Path(path)
    text = _key_text(path, "private")
    if b"-----BEGIN PUBLIC KEY-----" in text:
        raise SigningError(f"'{path}' is a public key: sign with the private key of the pair (the public one "
                           "is what `edgekit verify --key` takes).")
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise SigningError(f"private key '{path}' is encrypted with a password, which edgekit does not ask for: "
                           "sign with an unencrypted copy kept where only you can read it "
                           f"(`openssl pkey -in {path} -out plain.pem`).") from None
    except ValueError:  # also the cryptography message for any non-PEM or damaged file
        raise SigningError(f"'{path}' is not a PEM private key (it should start with -----BEGIN PRIVATE KEY-----"
                           " or -----BEGIN EC PRIVATE KEY-----): pass the key file itself, or make a pair with "
                           "`edgekit keygen --out DIR`.") from None
    _check_curve(key, path, "private")
    return key


def load_public_key(path: str | Path):
    """The public key in a PEM file; SigningError when it is a private key, garbage or not elliptic-curve."""
    serialization, _ = _crypto()
    path = Path(path)
    text = _key_text(path, "public")
    if b"PRIVATE KEY-----" in text:
        raise SigningError(f"'{path}' is a private key: verify with the public key of the pair (public.pem from "
                           "`edgekit keygen`), and keep the private one off the machines that only verify.")
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError:
        raise SigningError(f"'{path}' is not a PEM public key (it should start with -----BEGIN PUBLIC KEY-----): "
                           "pass the public key of the pair the bundle was signed with.") from None
    _check_curve(key, path, "public")
    return key


def key_problem(path: str | Path) -> str | None:
    """What keeps a private key file from signing (a recipe's `signing.key`), or None: for preflight checks."""
    try:
        load_private_key(path)
        _model_signing()
    except SigningError as e:
        return str(e)
    return None


def generate_keys(folder: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new EC P-256 pair, FOLDER/private.pem (readable by the owner only) and FOLDER/public.pem."""
    serialization, ec = _crypto()
    folder = Path(folder)
    private, public = folder / PRIVATE_KEY, folder / PUBLIC_KEY
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not force:
        raise SigningError(f"{' and '.join(existing)} already exist: pass --force to replace them (bundles signed "
                           "with the old key then no longer verify with the new public key), or choose another "
                           "--out folder.")
    key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created 0600 rather than chmod-ed after writing, so the key is never readable by others.
    private.unlink(missing_ok=True)
    with os.fdopen(os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


# ---------------------------------------------------------------------------- signatures

def _signature_path(folder: Path, signature: str | Path | None) -> Path:
    """BUNDLE/model.sig by default; elsewhere only outside the bundle, where verify does not see it as an
    unlisted file."""
    if signature is None:
        return folder / SIGNATURE
    signature = Path(signature)
    if folder.resolve() in signature.resolve().parents and signature.resolve() != (folder / SIGNATURE).resolve():
        raise SigningError(f"--signature {signature} is inside the bundle under another name than {SIGNATURE}: "
                           f"`edgekit verify` would report it as a file added to the bundle. Leave --signature out "
                           f"({SIGNATURE}), or write it outside the bundle folder.")
    return signature


def _hashing(folder: Path, signature: Path):
    """Every file of the bundle, git files included, except the signature itself: sha256 per file."""
    hashing = _model_signing().hashing
    # Relative to the bundle: model-signing records it in what it signs, and a moved bundle still verifies.
    ignored = [signature.name] if signature.resolve().parent == folder.resolve() else []
    return hashing.Config().use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=ignored, ignore_git_paths=False)


def sign_bundle(folder: str | Path, key: str | Path, signature: str | Path | None = None) -> Path:
    """Sign every file of the bundle `folder` with the private key `key`; returns the signature's path.

    Does not check the bundle against its manifest (`edgekit sign` does that first; the pipeline signs the
    bundle it has just written)."""
    folder = Path(folder)
    load_private_key(key)
    if not folder.is_dir():
        raise SigningError(f"'{folder}' is not a folder: pass the bundle folder a run wrote (RUN/bundle).")
    path = _signature_path(folder, signature)
    special = special_entries(folder)
    if special:
        raise SigningError(f"{shown(folder)}/{shown(special[0][0])} is {special[0][1]}, not a regular file or folder; "
                           "a signature covers only regular files: remove it, then sign again.")
    ms = _model_signing()
    ms.signing.Config().use_elliptic_key_signer(private_key=Path(key)).set_hashing_config(
        _hashing(folder, path)).sign(folder, path)
    return path


def _mismatch_lines(message: str) -> list[str]:
    """model-signing's "Signature mismatch: [diff, ...]" (verifying.Config._get_manifest_diff) as one line per
    file; any item it words otherwise is kept as it is."""
    try:
        items = ast.literal_eval(message.removeprefix("Signature mismatch:").strip())
    except (ValueError, SyntaxError):
        return [message]
    lines = []
    for item in items if isinstance(items, list) else [message]:
        if match := re.match(r"Hash mismatch for '(.+?)':", item):
            lines.append(f"{match.group(1)}: changed since the bundle was signed")
        elif match := re.match(r"Extra files found in model '.*?': (.+)", item):
            lines += [f"{name}: not signed (added since the bundle was signed)" for name in match.group(1).split(", ")]
        elif match := re.match(r"Missing files in model '.*?': (.+)", item):
            lines += [f"{name}: signed, and now missing (removed since the bundle was signed)"
                      for name in match.group(1).split(", ")]
        else:
            lines.append(str(item))
    return lines


def signature_problems(folder: str | Path, key: str | Path, signature: str | Path | None = None) -> list[str]:
    """Problems of the bundle's signature against the trusted public key `key`, one line each ([] when it
    verifies). A key edgekit cannot use raises SigningError instead: that is the caller's file, not the bundle."""
    folder = Path(folder)
    load_public_key(key)
    path = _signature_path(folder, signature)
    name = shown(path.name if path.parent == folder else str(path))
    resign = (f"get the bundle again from whoever holds the private key of {shown(key)}, or, for a bundle you built "
              f"yourself, re-sign it with the key you trust (`edgekit sign {shown(folder)} --key PRIVATE.pem`)")
    special = special_entries(folder)
    kind = not_regular(path)
    if special:  # model-signing reads every entry of the folder: a FIFO would block it; say which, read nothing
        files = [f"{shown(entry)}: is {what}, not a regular file or folder; a signature covers only regular "
                 "files: remove it" for entry, what in special]
        why = "not checked: the bundle holds entries a signature cannot cover (above)"
    elif kind is not None:
        files, why = [], f"is {kind}, not a regular file; not read"
    elif not path.exists():
        files, why = [], "missing: the bundle was never signed, or its signature was left behind when it was copied"
    elif path.stat().st_size > MAX_SIGNATURE_BYTES:
        files, why = [], (f"{path.stat().st_size:,} bytes, more than the {MAX_SIGNATURE_BYTES:,} a signature can be; "
                          "not read")
    else:
        problems = _verify(folder, key, path)
        if problems is None:
            return []
        files, why = problems
    return files + [f"{name}: {why}; {resign}."]


# How many entries of a bundle folder are looked at for special files before giving up (a bundle has a dozen).
MAX_ENTRIES = 10_000


def special_entries(folder: Path) -> list[tuple[str, str]]:
    """(relative name, what it is) of every entry under `folder` that is neither a regular file nor a folder (a
    FIFO, device or socket, symlinks followed), without opening any: model-signing would block reading a FIFO."""
    found, seen = [], 0
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            seen += 1
            if seen > MAX_ENTRIES:
                return found + [(".", f"a folder of more than {MAX_ENTRIES:,} entries")]
            kind = not_regular(Path(root) / entry)
            if kind not in ("a folder", None):
                found.append(((Path(root) / entry).relative_to(folder).as_posix(), kind))
    return found


def _verify(folder: Path, key: str | Path, path: Path) -> tuple[list[str], str] | None:
    """None when model-signing accepts the signature; else (a line per file at fault, what is wrong)."""
    from cryptography.exceptions import InvalidSignature  # importable: the key was loaded with cryptography

    config = _model_signing().verifying.Config().use_elliptic_key_verifier(public_key=Path(key))
    try:
        config.set_hashing_config(_hashing(folder, path)).verify(folder, path)
    except ValueError as e:  # model-signing answers "no" with ValueError, its message saying which check failed
        text = str(e)
        if text.startswith("Signature mismatch"):
            return _mismatch_lines(text), ("the files above differ from what was signed: the bundle was changed "
                                           "after signing")
        if text.startswith("Key mismatch"):
            return [], f"made with another key than {key}: someone else signed this bundle"
        return [], f"not a signature model-signing can check ({text.splitlines()[0][:200]})"
    except InvalidSignature:
        return [], f"the signature does not verify with {key}: it was edited, or made with another key"
    except Exception as e:  # noqa: BLE001 - a damaged signature file fails parsing with assorted errors
        return [], f"unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
    return None
