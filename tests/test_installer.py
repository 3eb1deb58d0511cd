"""scripts/install_sageattention.py against simulated environments: a fresh venv whose
site-packages holds a fake torch (version, CUDA and GPUs from environment variables) and fake
Triton dist-info, release folders written by scripts/make_index.py, served by http.server on
127.0.0.1. One test per failure: no wheel fits, network down, tampered or damaged download,
failed pip run (an earlier install stays importable), conflicting Triton, wrong Triton series,
bad manifest, bad arguments. The real path on a GPU runs on the device (docs/install.md)."""
import ast
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import venv
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_make_index import ARCHS, SHA, make_wheel, run_make_index

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "scripts" / "install_sageattention.py"
PACKAGE_COPY = ROOT / "sageattention" / "_installer.py"
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import matrix

TORCH = "2.9.1+cu130"
WHEEL = "sageattention-2.2.0.post1+cu130torch2.9.1-cp39-abi3-manylinux_2_35_x86_64.whl"
OLD = "sageattention-2.2.0+cu130torch2.9.1-cp39-abi3-manylinux_2_35_x86_64.whl"

FAKE_TORCH = '''import os
__version__ = os.environ.get("FAKE_TORCH_VERSION", "2.9.1+cu130")
class version:
    cuda = os.environ.get("FAKE_TORCH_CUDA", "13.0") or None
class cuda:
    _gpus = [g for g in os.environ.get("FAKE_GPUS", "8.9").split(",") if g]
    @staticmethod
    def is_available():
        return bool(cuda._gpus)
    @staticmethod
    def device_count():
        return len(cuda._gpus)
    @staticmethod
    def get_device_capability(i):
        return tuple(int(x) for x in cuda._gpus[i].split("."))
    @staticmethod
    def get_device_name(i):
        return "Fake GPU"
'''
# The self-test the installer runs: `python -m sageattention doctor --json --no-manifest`.
FAKE_DOCTOR = b'''import json, os, sys
ok = os.environ.get("FAKE_SELFTEST", "pass") == "pass"
print(json.dumps({"ok": ok, "checks": [{"name": "self-test", "ok": ok, "detail": "fake", "fix": "none"}]}))
sys.exit(0 if ok else 1)
'''


def dist_info(site: Path, name: str, version: str, files=()) -> None:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (folder / "INSTALLER").write_text("pip\n")
    record = [f"{folder.name}/{n},," for n in ("METADATA", "INSTALLER", "RECORD")] + list(files)
    (folder / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture(scope="module")
def pip_dir(tmp_path_factory):
    """pip for the fake environments: links to this interpreter's pip (nothing else of it)."""
    import pip

    src = Path(pip.__file__).resolve().parent
    out = tmp_path_factory.mktemp("pip")
    (out / "pip").symlink_to(src)
    for info in src.parent.glob("pip-*.dist-info"):
        (out / info.name).symlink_to(info)
    return out


@pytest.fixture
def fake_env(tmp_path, pip_dir):
    """A venv with a fake torch and Triton; returns (python, site-packages)."""
    home = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_pip_for_tests.pth").write_text(str(pip_dir) + "\n")
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH)
    dist_info(site, "torch", TORCH.split("+")[0], ["torch/__init__.py,,"])
    dist_info(site, "triton", "3.5.0")
    return python, site


def fake_triton_wheel(folder: Path, name: str, version: str, extra=None) -> Path:
    """A Triton wheel for the offline folder (pure, so it installs anywhere); extra: more files."""
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    files = {f"{name.replace('-', '_')}_fake/__init__.py": b"", **(extra or {}), f"{dist}/METADATA":
             f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = ("".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return path


def release(folder: Path, url="http://127.0.0.1:9/", wheels=(WHEEL,)) -> Path:
    for name in wheels:
        make_wheel(folder, name, extra={"sageattention/__main__.py": FAKE_DOCTOR},
                   CUDA_ARCHS=ARCHS)
    proc = run_make_index(folder, "--download-url", url, "--out", folder.parent / "site",
                          "--git-sha", SHA)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture
def server(tmp_path):
    """http.server on 127.0.0.1 over tmp_path/www; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def install(*args, env=None, python=None):
    env = {**os.environ, "FAKE_GPUS": "8.9", **(env or {})}
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, str(INSTALLER), *map(str, args)]
    if python is not None:
        cmd += ["--python-exe", str(python)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False,
                          stdin=subprocess.DEVNULL)


def installed(python, env=None) -> dict:
    code = ("import json, importlib.metadata as m\nout = {}\nfor n in ('sageattention', 'triton', "
            "'triton-windows', 'torch'):\n    try: out[n] = m.version(n)\n    except Exception: pass\n"
            "print(json.dumps(out))")
    # cwd: not the checkout, whose sageattention.egg-info would answer
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}, cwd=Path(python).parent)
    return json.loads(proc.stdout)


def one_line_error(proc) -> str:
    """The one error line (the progress bar may precede it on stderr)."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if "[#" not in ln and "% " not in ln]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("install_sageattention: "), proc.stderr
    return lines[0]


# ---- one implementation, one file, standard library only -----------------------------------

def test_published_installer_is_the_packages_copy():
    assert INSTALLER.read_bytes() == PACKAGE_COPY.read_bytes(), (
        "scripts/install_sageattention.py and sageattention/_installer.py differ: edit "
        "sageattention/_installer.py, then cp it to scripts/install_sageattention.py")


def test_installer_imports_the_standard_library_only():
    tree = ast.parse(INSTALLER.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # torch: what the probe inspects (inside try, never required)
    assert names - {"torch"} <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    # -I -S: no site-packages at all, as in a bare embedded Python
    proc = subprocess.run([sys.executable, "-I", "-S", str(INSTALLER), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "--python-exe" in proc.stdout, proc.stderr


def test_triton_series_table_is_compat_rules():
    rules = matrix.load_rules()
    from sagewheels import matching

    installer = matching._rule
    assert installer.TRITON_SERIES == {k: v["triton_series"] for k, v in rules["torch"].items()}
    packages = rules["rules"]["triton_package"]
    assert installer.TRITON_PACKAGES == {k: packages[k] for k in ("linux", "windows")}


def test_matrix_rows_get_the_triton_pin_the_installer_derives():
    """A row's triton requirement and the installer's (for the row's torch) name one series."""
    from sagewheels import matching

    rule = matching._rule
    rows, _ = matrix.check_rows(matrix.load_yaml(matrix.MATRIX), matrix.load_rules())
    for row in rows:
        derived = rule.triton_requirement(row.platform, row.torch + "+" + row.cuda)
        assert rule.requirement_series(derived) == rule.requirement_series(row.triton), (row.id, derived)


# ---- deciding (--dry-run --json, the MANIFEST.md contract) ---------------------------------

def test_seed_machine_by_overrides(tmp_path):
    folder = tmp_path / "rel"
    make_wheel(folder, "sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl")
    assert run_make_index(folder, "--download-url", "https://x.invalid/", "--out", tmp_path / "site",
                          "--git-sha", SHA).returncode == 0
    proc = install("--manifest", folder, "--dry-run", "--json", "--platform", "windows", "--python",
                   "cp312", "--torch", "2.8.0+cu129", "--gpu-arch", "8.9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["wheel"] == "sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl"
    assert out["triton"] == "triton-windows<3.5" and out["why"] == []
    proc = install("--manifest", folder, "--dry-run", "--json", "--platform", "windows", "--python",
                   "cp312", "--torch", "2.8.0+cpu", "--gpu-arch", "8.9")
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["wheel"] is None
    assert any("not a CUDA build" in w for w in out["why"]), out["why"]


@pytest.mark.parametrize("env, words", [
    ({"FAKE_TORCH_VERSION": "2.9.1+cpu", "FAKE_TORCH_CUDA": ""}, "not a CUDA build"),
    ({"FAKE_TORCH_VERSION": "2.8.0+cu129"}, "this wheel is for torch 2.9.1"),
    ({"FAKE_GPUS": "7.5"}, "compute capability 7.5 has no kernels"),
])
def test_no_fit_names_the_field_and_the_fix(tmp_path, fake_env, env, words):
    python, _ = fake_env
    folder = release(tmp_path / "rel")
    proc = install("--manifest", folder, "--dry-run", "--json", python=python, env=env)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["wheel"] is None
    assert any(words in w for w in out["why"]), out["why"]
    proc = install("--manifest", folder, python=python, env=env)  # the same, for a person
    assert proc.returncode == 1 and "no wheel fits" in proc.stdout and words in proc.stdout


def test_without_torch_it_says_install_torch_first(tmp_path, fake_env):
    python, site = fake_env
    shutil.rmtree(site / "torch")
    folder = release(tmp_path / "rel")
    out = json.loads(install("--manifest", folder, "--dry-run", "--json", python=python).stdout)
    assert out["wheel"] is None and any("not installed: install torch first" in w for w in out["why"])


# ---- installing ------------------------------------------------------------------------------

def test_offline_install_from_a_folder_leaves_torch_alone(tmp_path, fake_env):
    python, site = fake_env
    folder = release(tmp_path / "rel")
    torch_before = (site / "torch" / "__init__.py").read_bytes()
    proc = install("--manifest", folder, python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-test: ok" in proc.stdout and "verified sha256" in proc.stdout
    got = installed(python)
    assert got["sageattention"] == "2.2.0.post1+cu130torch2.9.1"
    assert got["torch"] == "2.9.1" and (site / "torch" / "__init__.py").read_bytes() == torch_before
    assert got["triton"] == "3.5.0"  # torch 2.9's series was there already: untouched


def test_download_with_progress_and_json(tmp_path, fake_env, server):
    python, _ = fake_env
    root, url = server
    release(root, url=url)
    (root.parent / "elsewhere").mkdir()
    manifest = root.parent / "elsewhere" / "manifest.json"
    shutil.move(str(root / "manifest.json"), manifest)  # no wheel next to it: download
    proc = install("--manifest", manifest, "--no-self-test", python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "100%" in proc.stderr  # the progress bar (a line per 10% when not a terminal)
    assert installed(python)["sageattention"] == "2.2.0.post1+cu130torch2.9.1"
    shutil.copy(manifest, root / "manifest.json")
    proc = install("--manifest", url + "manifest.json", "--json", "--no-self-test", python=python)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["installed"] and out["wheel"] == WHEEL, out


def _with_old_install(tmp_path, python):
    old = release(tmp_path / "old", wheels=(OLD,))
    assert install("--manifest", old, "--no-self-test", python=python).returncode == 0
    assert installed(python)["sageattention"] == "2.2.0+cu130torch2.9.1"


def test_tampered_download_is_refused_and_the_old_install_stays(tmp_path, fake_env, server):
    python, _ = fake_env
    _with_old_install(tmp_path, python)
    root, url = server
    release(root, url=url)
    manifest = tmp_path / "m" / "manifest.json"
    manifest.parent.mkdir()
    shutil.move(str(root / "manifest.json"), manifest)
    wheel = root / WHEEL
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    wheel.write_bytes(bytes(data))
    proc = install("--manifest", manifest, python=python)
    assert proc.returncode == 1
    assert "does not match the manifest" in one_line_error(proc) and "nothing was installed" in proc.stderr
    assert installed(python)["sageattention"] == "2.2.0+cu130torch2.9.1"
    subprocess.run([str(python), "-c", "import sageattention"], check=True, cwd=python.parent)


def test_failed_pip_run_leaves_the_old_install(tmp_path, fake_env):
    python, _ = fake_env
    _with_old_install(tmp_path, python)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / WHEEL).write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: pip refuses it
    proc = run_make_index(folder, "--download-url", "http://127.0.0.1:9/", "--out", tmp_path / "s",
                          "--git-sha", SHA)
    if proc.returncode:  # make_index refuses it: write the manifest by hand, hash and size right
        import hashlib

        data = (folder / WHEEL).read_bytes()
        good = release(tmp_path / "good")
        manifest = json.loads((good / "manifest.json").read_text())
        manifest["wheels"][0].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = install("--manifest", folder, python=python)
    assert proc.returncode == 1 and "pip failed" in one_line_error(proc), proc.stderr
    assert installed(python)["sageattention"] == "2.2.0+cu130torch2.9.1"


def test_network_down_is_one_line(tmp_path, fake_env):
    python, _ = fake_env
    proc = install("--manifest", "http://127.0.0.1:9/manifest.json", python=python)
    assert proc.returncode == 1 and "cannot connect" in one_line_error(proc)
    assert "--manifest FOLDER" in proc.stderr
    folder = release(tmp_path / "rel")
    manifest = tmp_path / "m.json"
    shutil.move(str(folder / "manifest.json"), manifest)  # the wheel's URL is the dead port
    proc = install("--manifest", manifest, python=python)
    assert proc.returncode == 1 and "cannot connect" in one_line_error(proc)
    assert "sageattention" not in installed(python)


def test_http_error_names_the_status(tmp_path, fake_env, server):
    python, _ = fake_env
    _, url = server
    proc = install("--manifest", url + "missing/manifest.json", python=python)
    assert proc.returncode == 1 and "answered 404" in one_line_error(proc)


def test_wrong_triton_series_gets_the_pin(tmp_path, fake_env):
    python, site = fake_env
    shutil.rmtree(next(site.glob("triton-3.5.0.dist-info")))
    dist_info(site, "triton", "3.4.0")  # torch 2.9 pins 3.5
    folder = release(tmp_path / "rel")
    fake_triton_wheel(folder, "triton", "3.5.1")
    proc = install("--manifest", folder, "--no-self-test", python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "triton 3.4.0 does not meet triton==3.5.*" in proc.stdout
    assert installed(python)["triton"] == "3.5.1"


def test_conflicting_triton_is_removed_only_with_yes(tmp_path, fake_env):
    python, site = fake_env
    dist_info(site, "triton-windows", "3.5.0.post21")
    folder = release(tmp_path / "rel")
    proc = install("--manifest", folder, "--no-self-test", python=python)
    assert proc.returncode == 1 and "--yes" in one_line_error(proc)
    assert "sageattention" not in installed(python) and "triton-windows" in installed(python)
    proc = install("--manifest", folder, "--no-self-test", "--yes", python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "triton-windows" not in installed(python) and installed(python)["triton"] == "3.5.0"


def test_failed_self_test_is_exit_1_with_the_failed_checks(tmp_path, fake_env):
    python, _ = fake_env
    folder = release(tmp_path / "rel")
    proc = install("--manifest", folder, python=python, env={"FAKE_SELFTEST": "fail"})
    assert proc.returncode == 1 and "FAILED self-test: fake -> none" in proc.stdout


def test_no_write_access_is_one_line():
    from sagewheels import matching

    with pytest.raises(matching._rule.InstallError, match="no write access"):
        matching._rule.check_writable({"site_writable": False, "purelib": "/x/site-packages"})


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"{not json", "not a JSON manifest"),
    (b'{"schema_version": 2, "wheels": []}', "schema_version 2"),
    (b'{"schema_version": 1, "wheels": [{"filename": "../../evil.whl", "sha256": "' + b"0" * 64
     + b'", "size": 1}]}', "not a plain wheel file name"),
    (b'{"schema_version": 1, "wheels": [{"filename": "a-1-py3-none-any.whl", "sha256": "x", "size": 1}]}',
     "sha256 is not 64"),
    (b"[]", "not a manifest"),
])
def test_bad_manifest_is_one_line(tmp_path, fake_env, content, words):
    python, _ = fake_env
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    proc = install("--manifest", path, "--dry-run", python=python)
    assert proc.returncode == 2 and words in one_line_error(proc)  # bad input


@pytest.mark.parametrize("args, words", [
    (["--python", "py3"], "--python 'py3'"),
    (["--gpu-arch", "sm89"], "--gpu-arch 'sm89'"),
    (["--torch", "latest"], "--torch 'latest'"),
    (["--platform", "mac"], "invalid choice"),
    (["--python-exe", "/no/such/python"], "no such file"),
])
def test_bad_arguments_are_one_line(args, words):
    proc = install(*args)
    assert proc.returncode in (1, 2) and words in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr


# ---- the oldest Python an embedded setup may have -------------------------------------------

def test_installer_parses_as_python_3_9():
    ast.parse(INSTALLER.read_text(), feature_version=(3, 9))


@pytest.mark.parametrize("version", ["3.9", "3.13"])
def test_installer_runs_under_other_pythons(tmp_path, version):
    """The probe and a dry run under CPython 3.9 (the oldest the wheels claim) and 3.13, where
    this machine has them (skipped otherwise)."""
    candidates = [shutil.which(f"python{version}")] + sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    exe = next((c for c in candidates if c and subprocess.run(
        [c, "-c", "pass"], capture_output=True, check=False).returncode == 0), None)
    if exe is None:
        pytest.skip(f"no python{version} on this machine")
    folder = release(tmp_path / "rel")
    probe = subprocess.run([exe, str(INSTALLER), "--probe"], capture_output=True, text=True,
                           timeout=120, check=True, cwd=tmp_path)
    assert json.loads(probe.stdout)["python_tag"] == "cp3" + version.split(".")[1]
    proc = subprocess.run([exe, str(INSTALLER), "--manifest", str(folder), "--dry-run", "--json",
                           "--platform", "linux", "--python", "cp312", "--torch", TORCH,
                           "--gpu-arch", "8.9"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout)["wheel"] == WHEEL, proc.stderr


def test_guides_cover_the_same_pitfalls():
    """The English and Chinese guides: the same troubleshooting rows and the same commands."""
    rows = {}
    for name in ("install.md", "install.zh-CN.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        table = text.split("\n## ")[[s.split("\n")[0] for s in text.split("\n## ")].index(
            "Troubleshooting" if name == "install.md" else "常见问题")]
        rows[name] = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
        for needle in ("install_sageattention.py", "python -m sageattention doctor", "--use-sage-attention",
                       "Triton only support CUDA 10.0", "Failed to find Python libs", "DLL load failed",
                       "vc_redist", "--no-deps", "KJNodes", "python_embeded"):
            assert needle in text, (name, needle)
    assert len(rows["install.md"]) == len(rows["install.zh-CN.md"]) >= 14, rows


def test_embedded_python_markers_and_the_windows_note(tmp_path):
    """ComfyUI portable's python_embeded: python312._pth, no include/ or libs/."""
    from sagewheels import matching

    rule = matching._rule
    (tmp_path / "python312._pth").write_text("python312.zip\n.\nimport site\n")
    marks = rule.embedded_markers(tmp_path, (3, 12))
    assert marks == {"pth": "python312._pth", "include": False, "libs": False}
    env = {"platform": "windows", "embedded": marks, "python_version": "3.12.10"}
    notes = rule.environment_notes(env)
    assert len(notes) == 1 and "include/ and libs/" in notes[0] and "3.12.10" in notes[0]
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "Python.h").write_text("")
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "python312.lib").write_bytes(b"")
    marks = rule.embedded_markers(tmp_path, (3, 12))
    assert marks["include"] and marks["libs"]
    assert rule.environment_notes({**env, "embedded": marks}) == []
    assert rule.environment_notes({**env, "platform": "linux", "embedded": {}}) == []


def test_unreachable_proxy_is_named(tmp_path, fake_env, server):
    """urllib takes the proxy from the environment; a dead one is named in the one line."""
    python, _ = fake_env
    root, url = server
    release(root, url=url)
    proc = install("--manifest", url + "manifest.json", "--dry-run", python=python,
                   env={"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
                        "NO_PROXY": "", "no_proxy": ""})
    line = one_line_error(proc)
    assert proc.returncode == 1 and "through the proxy http://127.0.0.1:9" in line, line
    assert "unset HTTP_PROXY" in line


def test_deeply_nested_manifest_is_one_line(tmp_path, fake_env):
    python, _ = fake_env
    path = tmp_path / "manifest.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    proc = install("--manifest", path, "--dry-run", python=python)
    assert proc.returncode == 2 and "not a JSON manifest" in one_line_error(proc)


def test_a_trickling_server_is_given_up(tmp_path, fake_env, monkeypatch):
    """The whole download has a deadline (NET_TIMEOUT_S + size / MIN_RATE), not only each read."""
    from sagewheels import matching

    rule = matching._rule

    class Slow:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            return b"x"

    monkeypatch.setattr(rule, "_open_url", lambda url, timeout: Slow())
    monkeypatch.setattr(rule, "NET_TIMEOUT_S", 0)
    monkeypatch.setattr(rule, "MIN_RATE", 10 ** 9)
    entry = {"filename": WHEEL, "size": 10 ** 6, "sha256": "0" * 64, "url": "http://127.0.0.1:9/x.whl"}
    with pytest.raises(rule.InstallError, match="slower than"):
        rule.fetch_wheel(entry, None, tmp_path, quiet=True)


def test_generated_manifests_never_crash_the_decision(tmp_path):
    """Any JSON in the wheel entries: InstallError (one line) or a decision, never a traceback."""
    import types

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from sagewheels import matching

    rule = matching._rule
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=12), st.sampled_from(
                            ["windows", "linux", "cp312", "abi3", "stable", "cpython", "2.8.0",
                             "cu129", "8.9", "9.0a", "8.0+PTX", "triton-windows<3.5"]))
    values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), c, max_size=3)),
                          max_leaves=6)
    keys = st.sampled_from(["filename", "url", "sha256", "size", "version", "platform", "python_tag",
                            "abi_flavour", "torch", "torch_and_higher", "cuda", "archs", "triton"])
    valid = {"filename": "sageattention-1-cp39-abi3-win_amd64.whl", "sha256": "0" * 64, "size": 5}
    env = {"platform": "windows", "python_tag": "cp312", "torch": "2.8.0+cu129", "gpu_archs": ["8.9"],
           "triton": {}}
    args = types.SimpleNamespace(platform=None, python_tag=None, torch=None, gpu_archs=None)
    path = tmp_path / "manifest.json"

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.dictionaries(keys, values, max_size=13), max_size=4), st.booleans())
    def decide(wheels, keep_valid_names):
        wheels = [{**w, **valid} if keep_valid_names else w for w in wheels]
        path.write_text(json.dumps({"schema_version": 1, "wheels": wheels}))
        try:
            manifest, _, _ = rule.load_manifest(str(path))
        except rule.InstallError:
            return
        entry, result = rule.decide(args, env, manifest)
        json.dumps(result)
        if entry is not None:
            rule.triton_actions(env, result["triton"])

    decide()


# ---- found in review: shared Triton files, partial pip runs, broken servers, odd numbers ---------

def _triton_with_file(site: Path, name: str, version: str, text: str) -> None:
    """A Triton distribution that owns triton/__init__.py (both packages own that path)."""
    (site / "triton").mkdir(exist_ok=True)
    (site / "triton" / "__init__.py").write_text(text)
    dist_info(site, name, version, ["triton/__init__.py,,"])


def test_removing_the_conflicting_triton_keeps_the_wanted_ones_files(tmp_path, fake_env):
    python, site = fake_env
    shutil.rmtree(next(site.glob("triton-3.5.0.dist-info")))
    _triton_with_file(site, "triton", "3.5.0", "VERSION = 'kept'\n")
    dist_info(site, "triton-windows", "3.5.0.post21", ["triton/__init__.py,,"])
    folder = release(tmp_path / "rel")
    proc = install("--manifest", folder, "--no-self-test", "--yes", python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "triton" / "__init__.py").read_text() == "VERSION = 'kept'\n"
    got = installed(python)
    assert "triton-windows" not in got and got["triton"] == "3.5.0"


def test_a_pip_run_failing_after_one_package_is_rolled_back(tmp_path, fake_env):
    """pip installs Triton, then fails on sageattention: Triton's old files come back."""
    python, site = fake_env
    shutil.rmtree(next(site.glob("triton-3.5.0.dist-info")))
    _triton_with_file(site, "triton", "3.4.0", "VERSION = 'old'\n")  # torch 2.9 pins 3.5
    folder = release(tmp_path / "rel")
    fake_triton_wheel(folder, "triton", "3.5.1", extra={"triton/language/new.py": b"NEW = 1\n"})
    (site / "sageattention" / "_build_info.py").mkdir(parents=True)  # pip cannot write this file
    proc = install("--manifest", folder, "--no-self-test", python=python)
    line = one_line_error(proc)
    assert proc.returncode == 1 and "pip failed" in line and "put back as it was" in line, line
    got = installed(python)
    assert got["triton"] == "3.4.0" and "sageattention" not in got, got
    assert (site / "triton" / "__init__.py").read_text() == "VERSION = 'old'\n"
    # what pip wrote of the new Triton inside the existing folder is gone again
    assert not (site / "triton" / "language" / "new.py").exists()
    assert not (site / "triton_fake").exists()
    assert not list(site.glob(".sageattention-backup-*"))  # the kept files are cleaned up
    assert not list(site.glob("~*"))  # nor pip's renamed leftovers


def _raw_server(reply: bytes, trickle_from=None, delay: float = 0.1):
    """A TCP server on 127.0.0.1 that answers every connection with `reply` and closes; from
    byte `trickle_from` on, one byte per `delay` seconds."""
    import socket as socket_mod
    import time as time_mod

    srv = socket_mod.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    cut = len(reply) if trickle_from is None else trickle_from

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(reply[:cut])
                    for byte in reply[cut:]:
                        conn.sendall(bytes([byte]))
                        time_mod.sleep(delay)
                except OSError:
                    continue

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}/manifest.json"


@pytest.mark.parametrize("reply", [
    b"garbage\r\n\r\n",  # not an HTTP status line
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\n{\"schema",  # body cut off
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{}",  # shorter than it said
])
def test_a_broken_server_is_one_line(fake_env, reply):
    python, _ = fake_env
    srv, url = _raw_server(reply)
    try:
        proc = install("--manifest", url, "--dry-run", python=python)
        assert proc.returncode in (1, 2)
        one_line_error(proc)
        proc = install("--manifest", url, "--dry-run", "--json", python=python)
        assert "error" in json.loads(proc.stdout)
    finally:
        srv.close()


def test_a_trickling_server_hits_the_deadline():
    """A real server that sends one byte every 0.1 s: read_body gives up at its deadline (read1
    returns what has arrived, so the deadline is checked between bytes)."""
    import time as time_mod

    from sagewheels import matching

    rule = matching._rule
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    srv, url = _raw_server(head + b" " * 600, trickle_from=len(head))
    start = time_mod.monotonic()
    try:
        with pytest.raises(rule.InstallError, match="too slow"):
            rule.read_body(url, 1 << 20, timeout=1, budget=1)
    finally:
        srv.close()
    assert time_mod.monotonic() - start < 15


@pytest.mark.parametrize("args, words", [
    (["--torch", "2." + "9" * 5000], "--torch"),
    (["--python", "cp3" + "9" * 5000], "--python"),
])
def test_huge_numbers_in_arguments_are_one_line(args, words):
    proc = install(*args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_huge_numbers_and_odd_release_in_a_manifest(tmp_path, fake_env):
    python, _ = fake_env
    folder = release(tmp_path / "rel")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["wheels"][0]["archs"] = ["9" * 5000 + ".0"]
    manifest["wheels"][0]["torch"] = "2." + "9" * 5000
    (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = install("--manifest", folder, "--dry-run", "--json", python=python)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["wheel"] is None and out["why"], out
    manifest["release"] = "x"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = install("--manifest", folder, "--dry-run", python=python)
    assert proc.returncode == 2 and "'release' is not an object" in one_line_error(proc)


def test_source_and_ngc_torch_builds_take_the_variant_from_torch_version_cuda():
    from sagewheels import matching

    rule = matching._rule
    env = {"platform": "linux", "python_tag": "cp312", "torch": "2.8.0a0+5228986c39.nv25.05",
           "torch_cuda": "12.9", "gpu_archs": ["9.0"]}
    assert rule.machine_of(env, {})["torch"] == "2.8.0a0+cu129"
    assert rule.machine_of({**env, "torch": "2.8.0+cu129"}, {})["torch"] == "2.8.0+cu129"
    assert rule.machine_of({**env, "torch_cuda": None}, {})["torch"] == env["torch"]


def test_triton_wheels_of_the_folder_fit_this_python_and_the_newest_wins(tmp_path):
    from sagewheels import matching

    rule = matching._rule
    assert rule.wheel_fits_python("triton_windows-3.4.0.post20-cp312-cp312-win_amd64.whl", "cp312")
    assert not rule.wheel_fits_python("triton_windows-3.4.0.post20-cp312-cp312-win_amd64.whl", "cp311")
    assert rule.wheel_fits_python("triton-3.5.1-py3-none-any.whl", "cp39")
    for post in (9, 20):
        (tmp_path / f"triton_windows-3.4.0.post{post}-cp312-cp312-win_amd64.whl").write_bytes(b"x")
    (tmp_path / "triton_windows-3.4.0.post30-cp311-cp311-win_amd64.whl").write_bytes(b"x")
    dest = tmp_path / "dest"
    dest.mkdir()
    got = rule.fetch_triton(sys.executable, "triton-windows<3.5", tmp_path, dest, "cp312")
    assert got.name == "triton_windows-3.4.0.post20-cp312-cp312-win_amd64.whl"


def test_write_check_is_a_real_try(tmp_path):
    from sagewheels import matching

    rule = matching._rule
    assert rule.can_write(str(tmp_path))
    assert not rule.can_write(str(tmp_path / "missing"))
    assert not list(tmp_path.iterdir())  # the probe file is gone again


def test_an_interrupt_during_the_install_is_rolled_back(tmp_path, fake_env, monkeypatch):
    """Ctrl-C after the conflicting Triton was removed: it comes back, nothing is left over."""
    from sagewheels import matching

    rule = matching._rule
    python, site = fake_env
    shutil.rmtree(next(site.glob("triton-3.5.0.dist-info")))
    _triton_with_file(site, "triton", "3.5.0", "VERSION = 'kept'\n")
    dist_info(site, "triton-windows", "3.5.0.post21", ["triton/__init__.py,,"])
    folder = release(tmp_path / "rel")
    real = rule.run_pip

    def interrupted(python_exe, args, what):
        if args[0] == "install":
            raise KeyboardInterrupt
        return real(python_exe, args, what)

    monkeypatch.setattr(rule, "run_pip", interrupted)
    args = rule.parse_args(["--manifest", str(folder), "--python-exe", str(python), "--yes",
                            "--no-self-test", "--json"])
    with pytest.raises(KeyboardInterrupt):
        rule.run(args, {"wheel": None, "triton": None, "why": [], "installed": False})
    got = installed(python)
    assert got.get("triton-windows") == "3.5.0.post21" and "sageattention" not in got, got
    assert (site / "triton" / "__init__.py").read_text() == "VERSION = 'kept'\n"
    assert not list(site.glob(".sageattention-backup-*"))


def test_a_json_number_too_long_for_int_is_one_line(tmp_path, fake_env):
    python, _ = fake_env
    path = tmp_path / "manifest.json"
    path.write_text('{"schema_version": 1, "wheels": [{"size": ' + "9" * 5000 + "}]}")
    proc = install("--manifest", path, "--dry-run", python=python)
    assert proc.returncode == 2 and "not a JSON manifest" in one_line_error(proc)


def test_long_urls_are_kept():
    """The cap on overlong fields is for numbers only: a presigned URL can be long."""
    from sagewheels import matching

    rule = matching._rule
    url = "https://example.invalid/w.whl?" + "x" * 2000
    assert rule.text_of(url) == url and rule.number_text(url) == ""


def test_odd_manifest_paths_and_urls_are_one_line(tmp_path):
    for arg in ("http://[::1/manifest.json", str(tmp_path / ("x" * 300) / "manifest.json")):
        proc = install("--manifest", arg, "--dry-run", "--platform", "linux", "--python", "cp312",
                       "--torch", TORCH, "--gpu-arch", "8.9")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_server_that_trickles_its_headers_is_given_up():
    import time as time_mod

    from sagewheels import matching

    rule = matching._rule
    srv, url = _raw_server(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600, trickle_from=0)
    start = time_mod.monotonic()
    try:
        with pytest.raises(rule.InstallError, match="no answer within"):
            rule._open_url(url, 1, limit_s=2)
    finally:
        srv.close()
    assert time_mod.monotonic() - start < 10
