"""Signed bundles (edgekit/trust/signing.py): `edgekit sign`, `edgekit verify --key`, `edgekit keygen` and a
recipe's `signing:` key, on a real tiny run whose recipe signs its bundle. Tests that change files work on a copy."""

import hashlib
import json
import shutil
import stat
import sys

import numpy as np
import pytest
import yaml

from edgekit.errors import BundleMismatch, RecipeError, SigningError
from edgekit.stages.bundle import reference_session, run_reference
from edgekit.stages.loading import recipe_from_dict
from edgekit.trust.signing import SIGNATURE, generate_keys, sign_bundle
from edgekit.trust.verify import verify_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The trusted pair (the run signs with it) and someone else's."""
    root = tmp_path_factory.mktemp("keys")
    trusted, other = generate_keys(root / "trusted"), generate_keys(root / "other")
    return {"private": trusted[0], "public": trusted[1], "other_private": other[0], "other_public": other[1]}


def _signed_recipe(tiny_bert, key):
    from edgekit.testing import tiny_recipe

    return recipe_from_dict({**tiny_recipe(tiny_bert).model_dump(mode="json"), "signing": {"key": str(key)}})


@pytest.fixture(scope="module")
def signed_run(tiny_bert, keys, warm_cache):
    """A finished tiny run whose recipe has `signing: {key: ...}`: its bundle comes out signed (on a copy of the
    finished tiny run's cache)."""
    from edgekit.pipeline import distill_and_export

    cache = warm_cache("signed")
    return distill_and_export(_signed_recipe(tiny_bert, keys["private"]), out=cache.parent / "run", cache_dir=cache,
                              echo=print)


@pytest.fixture
def bundle_copy(signed_run, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(signed_run.path / "bundle", copy)
    return copy


def _redo_every_hash(folder):
    """What anyone can do after changing a file: recompute its sha256 and size in manifest.json and then
    manifest_sha256 (the sha256 of the file with that value replaced by 64 zeros), as edgekit/stages/bundle.py does."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in manifest["files"]:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest["manifest_sha256"] = "0" * 64
    text = json.dumps(manifest, indent=1) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    (folder / "manifest.json").write_text(text.replace("0" * 64, digest, 1), encoding="utf-8")


def _change_a_weight_and_cover_it_up(folder):
    """Perturb the largest weight matrix of model.onnx, record the outputs it now gives as the reference,
    and redo every hash: everything the unsigned `verify` checks still agrees."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims) if t.data_type == onnx.TensorProto.FLOAT
                 else 0)
    values = numpy_helper.to_array(weight)
    noise = np.random.default_rng(0).normal(0, 0.5, values.shape).astype(values.dtype)  # not a constant shift,
    weight.CopyFrom(numpy_helper.from_array(values + noise, weight.name))  # which a LayerNorm would cancel
    onnx.save(model, str(folder / "model.onnx"))
    with np.load(folder / "reference.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    batches = sorted({int(key.split("/")[2]) for key in arrays if key.startswith("in/dynamic/")})
    feeds = [{key.split("/", 3)[3]: value for key, value in arrays.items() if key.startswith(f"in/dynamic/{i}/")}
             for i in batches]
    changed = False
    for i, outputs in enumerate(run_reference(reference_session(folder / "model.onnx"), feeds)):
        for name, value in outputs.items():
            changed |= not np.allclose(arrays[f"out/model.onnx/{i}/{name}"], value, atol=1e-3)
            arrays[f"out/model.onnx/{i}/{name}"] = value
    assert changed, "the changed weight should change the model's outputs"
    np.savez(folder / "reference.npz", **arrays)
    _redo_every_hash(folder)


def test_a_recipe_with_signing_writes_a_bundle_that_verifies_with_the_public_key(signed_run, keys, run_cli):
    # setup
    bundle = signed_run.path / "bundle"
    # execute
    signed = run_cli("verify", bundle, "--key", keys["public"])
    plain = run_cli("verify", bundle)
    # assert
    assert (bundle / SIGNATURE).is_file() and signed_run.data["bundle"]["signature"] == SIGNATURE
    assert signed.exit_code == 0, signed.output
    assert "signature: ok" in signed.output
    # model.sig is not taken for a file added to the bundle, and plain verify points at --key
    assert plain.exit_code == 0, plain.output
    assert "pass --key" in plain.output


def test_a_changed_weight_with_every_hash_redone_passes_plain_verify_but_not_the_signature(bundle_copy, keys,
                                                                                          run_cli):
    # setup
    _change_a_weight_and_cover_it_up(bundle_copy)
    # execute
    verify_bundle(bundle_copy)  # the unsigned checks: integrity against accidents only
    result = run_cli("verify", bundle_copy, "--key", keys["public"])
    # assert
    assert result.exit_code == 1
    for name in ("model.onnx", "reference.npz", "manifest.json"):
        assert f"{name}: changed since the bundle was signed" in result.output
    assert "changed after signing" in result.output and "re-sign it with the key you trust" in result.output
    assert "Traceback" not in result.output


def test_the_tampered_bundle_re_signed_with_another_key_fails_with_the_trusted_key(bundle_copy, keys, run_cli):
    # setup
    _change_a_weight_and_cover_it_up(bundle_copy)
    sign_bundle(bundle_copy, keys["other_private"])
    # execute
    theirs = run_cli("verify", bundle_copy, "--key", keys["other_public"])
    ours = run_cli("verify", bundle_copy, "--key", keys["public"])
    # assert
    assert theirs.exit_code == 0, theirs.output
    assert ours.exit_code == 1
    assert f"{SIGNATURE}: made with another key than {keys['public']}" in ours.output
    assert "Traceback" not in ours.output


def test_files_added_and_removed_after_signing_are_named(bundle_copy, keys):
    # setup
    (bundle_copy / "extra.txt").write_text("not signed")
    (bundle_copy / "config.json").unlink()
    # execute
    with pytest.raises(BundleMismatch) as caught:
        verify_bundle(bundle_copy, key=keys["public"])
    # assert
    assert "extra.txt: not signed (added since the bundle was signed)" in str(caught.value)
    assert "config.json: signed, and now missing" in str(caught.value)


def test_verify_key_on_an_unsigned_bundle_says_the_signature_is_missing(bundle_copy, keys, run_cli):
    # setup
    (bundle_copy / SIGNATURE).unlink()
    # execute
    result = run_cli("verify", bundle_copy, "--key", keys["public"])
    # assert
    assert result.exit_code == 1
    assert f"{SIGNATURE}: missing: the bundle was never signed" in result.output
    assert "Traceback" not in result.output


def test_a_damaged_signature_file_is_a_finding_not_a_crash(bundle_copy, keys, run_cli):
    # setup
    (bundle_copy / SIGNATURE).write_text("{}")
    # execute
    result = run_cli("verify", bundle_copy, "--key", keys["public"])
    # assert
    assert result.exit_code == 1
    assert f"{SIGNATURE}: unreadable" in result.output and "Traceback" not in result.output


def test_edgekit_sign_checks_the_bundle_then_signs_it(bundle_copy, keys, run_cli):
    # setup: an unsigned bundle, and a broken copy of it
    (bundle_copy / SIGNATURE).unlink()
    broken = bundle_copy.with_name("broken")
    shutil.copytree(bundle_copy, broken)
    (broken / "labels.json").write_text("{}")
    # execute
    signed = run_cli("sign", bundle_copy, "--key", keys["private"])
    verified = run_cli("verify", bundle_copy, "--key", keys["public"])
    refused = run_cli("sign", broken, "--key", keys["private"])
    # assert
    assert signed.exit_code == 0, signed.output
    assert verified.exit_code == 0, verified.output
    assert refused.exit_code == 1 and "labels.json: " in refused.output
    assert not (broken / SIGNATURE).exists()


def test_a_signature_outside_the_bundle_and_one_inside_under_another_name(bundle_copy, keys, run_cli):
    # setup
    outside = bundle_copy.with_name("bundle.sig")
    # execute
    signed = run_cli("sign", bundle_copy, "--key", keys["private"], "--signature", outside)
    verified = run_cli("verify", bundle_copy, "--key", keys["public"], "--signature", outside)
    inside = run_cli("sign", bundle_copy, "--key", keys["private"], "--signature", bundle_copy / "other.sig")
    # assert
    assert signed.exit_code == 0 and verified.exit_code == 0, signed.output + verified.output
    assert inside.exit_code == 1 and "outside the bundle folder" in inside.output


def test_key_files_of_the_wrong_kind_are_clear_errors(signed_run, keys, run_cli, tmp_path):
    # setup
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    bundle = signed_run.path / "bundle"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    # execute
    results = {
        "garbage public": run_cli("verify", bundle, "--key", garbage),
        "private for verify": run_cli("verify", bundle, "--key", keys["private"]),
        "public for sign": run_cli("sign", bundle, "--key", keys["public"]),
        "rsa": run_cli("sign", bundle, "--key", rsa_key),
        "missing": run_cli("sign", bundle, "--key", tmp_path / "nope.pem"),
    }
    # assert
    assert all(r.exit_code == 1 and "Traceback" not in r.output for r in results.values())
    assert "is not a PEM public key" in results["garbage public"].output
    assert "is a private key: verify with the public key" in results["private for verify"].output
    assert "is a public key: sign with the private key" in results["public for sign"].output
    assert "elliptic-curve keys" in results["rsa"].output and "edgekit keygen" in results["rsa"].output
    assert "does not exist" in results["missing"].output


def test_keygen_writes_an_owner_only_private_key_and_keeps_an_existing_pair(run_cli, tmp_path):
    # execute
    first = run_cli("keygen", "--out", tmp_path / "k")
    again = run_cli("keygen", "--out", tmp_path / "k")
    # assert
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE((tmp_path / "k" / "private.pem").stat().st_mode) == 0o600
    assert (tmp_path / "k" / "public.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert again.exit_code == 1 and "--force" in again.output


def test_recipe_check_reports_a_missing_signing_key_at_its_line(tiny_bert, run_cli, tmp_path):
    # setup
    path = tmp_path / "signed.yaml"
    path.write_text(yaml.safe_dump(_signed_recipe(tiny_bert, tmp_path / "absent.pem").model_dump(mode="json")))
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 1
    assert "signing.key: private key file" in result.output and "does not exist" in result.output
    assert f"{path}:" in result.output and "Traceback" not in result.output


def test_without_the_signing_extra_sign_says_what_to_install(bundle_copy, keys, run_cli, monkeypatch):
    # setup: model-signing absent (None in sys.modules makes its import fail, as when it is not installed)
    (bundle_copy / SIGNATURE).unlink()
    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)
    # execute
    result = run_cli("sign", bundle_copy, "--key", keys["private"])
    # assert
    assert result.exit_code == 1
    assert "pip install 'edgekit[signing]'" in result.output and "Traceback" not in result.output
    with pytest.raises(SigningError):
        sign_bundle(bundle_copy, keys["private"])


def test_a_recipe_without_signing_still_validates_from_its_dump(tiny_bert):
    from edgekit.testing import tiny_recipe

    # a report.json's recipe (signing: null) validates again, and a bad signing section is a recipe error
    assert recipe_from_dict(tiny_recipe(tiny_bert).model_dump(mode="json")).signing is None
    with pytest.raises(RecipeError, match="signing"):
        recipe_from_dict({**tiny_recipe(tiny_bert).model_dump(mode="json"), "signing": {"path": "k.pem"}})
