"""SHA256SUMS and manifest.json for a release folder, and the index site built from them.

    python scripts/make_index.py WHEELDIR --download-url URL_PREFIX --out SITE
           [--merge] [--tag TAG] [--git-sha SHA] [--site-url URL] [--matrix PATH]

writes
    WHEELDIR/SHA256SUMS       "<sha256>  <filename>" per wheel (sha256sum -c reads it)
    WHEELDIR/manifest.json    this release (shared/MANIFEST.md); url = URL_PREFIX + filename
    SITE/manifest.json        this release, or with --merge every release of the site
    SITE/<index>index.html and SITE/<index>sageattention/index.html
                              a PEP 503 index per variant (cu129-torch2.8.0/simple/): its links
                              carry #sha256= (pip refuses a file that does not match) and
                              data-requires-python, so `pip install sageattention --index-url
                              SITE/<index>` installs exactly that variant's wheel
    SITE/index.html           the page people read: pick (or paste) a machine, get the command
                              for the wheel that fits it, or what to change when none does
    SITE/install_sageattention.py
                              a copy of the stand-alone installer, when scripts/ has one

Where the fields come from
- The wheel's name (packaging.utils): version, tags, platform, CUDA variant and torch from the
  local version (+cu129torch2.8.0, +cu130torch2.10andhigher for the stable ABI).
- The wheel's METADATA: Requires-Python; sageattention/_build_info.py (read with ast, never
  executed): torch, CUDA version, archs, ABI flavour, checked against the name.
- row and triton: a sidecar FILENAME-without-.whl + ".row.json" next to the wheel,
  {"row": ID or null, "triton": REQUIREMENT}, wins (a build job can record what it built from);
  else the build_matrix.yaml row (--matrix) of the same platform, local version and tags.
- release: --tag (default v<version>), version (the wheels' one public version), git_sha
  (--git-sha, else the GIT_SHA every wheel's _build_info records, else `git rev-parse HEAD` of
  this checkout), created (SOURCE_DATE_EPOCH if set, else now; ISO 8601 UTC with Z).

--merge reads SITE/manifest.json first: its wheels stay in the site (a file name already there
with another sha256 is an error: a published file never changes), its releases are kept in
"releases" and every wheel records its release's tag in "release".
Bad input (no WHEELDIR, no wheels, a .whl that is not a sageattention wheel, an unreadable
manifest for --merge, a bad URL) is one line on stderr and exit status 1, never a traceback.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import email.parser
import email.policy
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import matching

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parent
ROOT = SCRIPTS.parent
TEMPLATE = HERE / "site_page.html"
INSTALLER = SCRIPTS / "install_sageattention.py"
PROJECT = "sageattention"
SCHEMA_VERSION = 1
BUILD_INFO = "sageattention/_build_info.py"
# Bounds for what is read out of a wheel: real ones are a few kB; a hostile one must not cost
# memory. The wheel itself is only hashed (streamed).
MAX_TEXT_BYTES = 1_000_000
MAX_BUILD_INFO_BYTES = 64_000
MAX_MANIFEST_BYTES = 20_000_000
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError,
              NotImplementedError, ValueError)
LOCAL_RE = re.compile(r"cu(?P<cuda>[0-9]+)torch(?P<torch>[0-9]+(?:\.[0-9]+)*)(?P<higher>andhigher)?")
ARCH_RE = re.compile(r"[0-9]+\.[0-9]+a?(\+PTX)?")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
GIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
# The only index paths ever written: a merged manifest decides folder names, so a hand-edited
# one must not be able to point outside SITE.
INDEX_RE = re.compile(r"cu[0-9]+-torch[0-9]+(?:\.[0-9]+)*(?:andhigher)?/simple/")
URL_SCHEMES = ("https", "http", "file")
WHEEL_KEYS = ("filename", "url", "sha256", "size", "version", "row", "platform", "platform_tag",
              "python_tag", "abi_tag", "requires_python", "abi_flavour", "torch", "torch_and_higher",
              "cuda", "archs", "triton", "variant", "index")


class InputError(Exception):
    """Input make_index cannot use: reported as one line, exit status 1."""


def one_line(text) -> str:
    return " ".join(str(text).split())


# ---- reading one wheel ----------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def name_facts(path: Path) -> dict:
    """What the file name says: version, the one tag triple, the variant in the local version."""
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise InputError(f"{path.name}: not a wheel file name ({one_line(exc)})") from None
    if name != canonicalize_name(PROJECT):
        raise InputError(f"{path.name}: a wheel of {name}, not of {PROJECT}: keep only {PROJECT} "
                         "wheels in the release folder")
    if len(tags) != 1:
        raise InputError(f"{path.name}: several tags in one name; build one wheel per tag triple")
    local = LOCAL_RE.fullmatch(version.local or "")
    if not local:
        raise InputError(f"{path.name}: the version {version} has no +cuXYZtorchX.Y.Z local part "
                         "(+cu129torch2.8.0, +cu130torch2.10andhigher): not a variant wheel")
    tag = next(iter(tags))
    return {"filename": path.name, "version": str(version), "public": version.public,
            "python_tag": tag.interpreter, "abi_tag": tag.abi, "platform_tag": tag.platform,
            "platform": platform_of(path.name, tag.platform), "cuda": f"cu{local['cuda']}",
            "name_torch": local["torch"], "andhigher": bool(local["higher"]),
            "local": version.local}


def platform_of(filename: str, platform_tag: str) -> str:
    if platform_tag.startswith("win"):
        return "windows"
    if platform_tag.startswith(("manylinux", "musllinux", "linux")):
        return "linux"
    raise InputError(f"{filename}: platform tag {platform_tag} is neither Windows nor Linux")


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, filename: str) -> str:
    if info.file_size > limit:
        raise InputError(f"{filename}: {info.filename} is {info.file_size} bytes, more than "
                         f"{limit}: not a wheel make_index reads")
    data = zf.read(info)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{filename}: {info.filename} is not UTF-8") from None


def archive_texts(path: Path) -> tuple:
    """(METADATA text, _build_info.py text or None) of the archive, which must be a wheel."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path.name}: not a zip archive, so not a wheel")
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        dist_infos = sorted({n.split("/", 1)[0] for n in infos if n.split("/", 1)[0].endswith(".dist-info")})
        if len(dist_infos) != 1:
            raise InputError(f"{path.name}: {len(dist_infos)} .dist-info folders, a wheel has one")
        meta = infos.get(f"{dist_infos[0]}/METADATA")
        if meta is None or f"{dist_infos[0]}/WHEEL" not in infos:
            raise InputError(f"{path.name}: {dist_infos[0]} lacks METADATA or WHEEL: not a wheel")
        metadata = read_member(zf, meta, MAX_TEXT_BYTES, path.name)
        info = infos.get(BUILD_INFO)
        build_info = read_member(zf, info, MAX_BUILD_INFO_BYTES, path.name) if info else None
    return metadata, build_info


def metadata_facts(filename: str, text: str, version: str) -> dict:
    """Requires-Python, after checking that METADATA names this project and version."""
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    name, meta_version = msg.get("Name"), msg.get("Version")
    if not name or canonicalize_name(str(name)) != canonicalize_name(PROJECT):
        raise InputError(f"{filename}: METADATA names {name!r}, not {PROJECT}")
    try:
        same = Version(str(meta_version)) == Version(version)
    except InvalidVersion:
        same = False
    if not same:
        raise InputError(f"{filename}: METADATA says version {meta_version}, the file name {version}")
    requires = msg.get("Requires-Python")
    if requires is None:
        return {"requires_python": None}
    requires = one_line(requires)
    try:
        SpecifierSet(requires)
    except InvalidSpecifier:
        raise InputError(f"{filename}: METADATA Requires-Python {requires!r} is not a specifier") from None
    return {"requires_python": requires}


def build_info_values(filename: str, source: str | None) -> dict:
    """NAME = literal assignments of _build_info.py, read with ast.literal_eval (never exec)."""
    if source is None:
        raise InputError(f"{filename}: no {BUILD_INFO}: not a wheel built by scripts/build_wheel.py")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InputError(f"{filename}: {BUILD_INFO} does not parse ({one_line(exc)})") from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                continue  # not a literal: setup.py never writes such a line, so it is not used
    return values


def flavour_of(facts: dict) -> str:
    if facts["andhigher"]:
        return "stable"
    if facts["abi_tag"] == "abi3":
        return "abi3"
    if facts["abi_tag"] == facts["python_tag"]:
        return "cpython"
    raise InputError(f"{facts['filename']}: ABI tag {facts['abi_tag']}: expected abi3 or "
                     f"{facts['python_tag']}")


def three_part(version: str) -> str:
    """2.10 -> 2.10.0: the manifest's torch is always a full release."""
    return ".".join(str(x) for x in (Version(version).release + (0, 0, 0))[:3])


def build_facts(facts: dict, info: dict) -> dict:
    """torch, archs, flavour from _build_info.py, each checked against what the name says."""
    name = facts["filename"]
    flavour = flavour_of(facts)
    if info.get("ABI_FLAVOUR") != flavour:
        raise InputError(f"{name}: {BUILD_INFO} says ABI flavour {info.get('ABI_FLAVOUR')!r}, the "
                         f"file name says {flavour}")
    torch, cuda = info.get("TORCH_VERSION"), info.get("CUDA_VERSION")
    try:
        same_torch = isinstance(torch, str) and Version(torch) == Version(facts["name_torch"])
    except InvalidVersion:
        same_torch = False
    if not same_torch:
        raise InputError(f"{name}: {BUILD_INFO} says torch {torch!r}, the file name {facts['name_torch']}")
    recorded_cuda = "cu" + "".join(cuda.split(".")[:2]) if isinstance(cuda, str) else None
    if recorded_cuda != facts["cuda"]:
        raise InputError(f"{name}: {BUILD_INFO} says CUDA {cuda!r}, the file name {facts['cuda']}")
    archs = info.get("CUDA_ARCHS")
    if not (isinstance(archs, (list, tuple)) and archs
            and all(isinstance(a, str) and ARCH_RE.fullmatch(a) for a in archs)):
        raise InputError(f"{name}: {BUILD_INFO} CUDA_ARCHS is {archs!r}, expected archs such as '8.9'")
    git_sha = info.get("GIT_SHA")
    return {"abi_flavour": flavour, "torch": three_part(facts["name_torch"]),
            "torch_and_higher": flavour == "stable", "archs": list(archs),
            "git_sha": git_sha if isinstance(git_sha, str) and GIT_SHA_RE.fullmatch(git_sha) else None}


def read_wheel(path: Path) -> dict:
    """Everything the manifest says about one wheel, but its row, triton and url."""
    facts = name_facts(path)
    try:
        metadata, build_info = archive_texts(path)
        facts["sha256"], facts["size"] = sha256_of(path), path.stat().st_size
    except ZIP_ERRORS as exc:
        raise InputError(f"{path.name}: cannot read the archive ({one_line(exc)})") from None
    facts.update(metadata_facts(path.name, metadata, facts["version"]))
    facts.update(build_facts(facts, build_info_values(path.name, build_info)))
    return facts


# ---- row and Triton requirement -------------------------------------------------------------

def matrix_module():
    """build_matrix.yaml's reader. The tools are moving into sagewheels/: the module is
    sagewheels.matrix there, scripts/matrix.py before the move."""
    try:
        from sagewheels import matrix
    except ImportError:
        if str(SCRIPTS) not in sys.path:
            sys.path.insert(0, str(SCRIPTS))
        import matrix
    return matrix


def load_rows(path: Path) -> list:
    """The valid rows of the matrix (a row with problems is left out: matrix.py check says why)."""
    try:
        matrix = matrix_module()
    except ImportError as exc:
        raise InputError(f"cannot read {path}: {one_line(exc)} (pip install -e '.[build]')") from None
    try:
        rows, _problems = matrix.check_rows(matrix.load_matrix(path), matrix.load_rules())
    except matrix.MatrixError as exc:
        raise InputError(exc.render()) from None
    return rows


def matrix_row(facts: dict, rows: list):
    """The row that builds this wheel: same platform, local version and (python, abi) tags;
    the platform tag decides between rows that differ only there."""
    tags = (facts["python_tag"], facts["abi_tag"])
    found = [r for r in rows if r.platform == facts["platform"] and r.local_version == facts["local"]
             and tags in [(py, abi) for py, abi, _plat in r.wheel_tags]]
    if len(found) > 1:
        found = [r for r in found if facts["platform_tag"] in [p for _, _, p in r.wheel_tags]]
    if len(found) != 1:
        what = "no row" if not found else f"{len(found)} rows"
        raise InputError(f"{facts['filename']}: {what} of the build matrix builds this wheel; add the "
                         f"row, or a {sidecar_path_name(facts['filename'])} sidecar with "
                         '{"row": ..., "triton": ...}')
    return {"row": found[0].id, "triton": found[0].triton}


def sidecar_path_name(filename: str) -> str:
    return filename[:-len(".whl")] + ".row.json"


def sidecar(path: Path) -> dict | None:
    """{"row", "triton"} from the wheel's optional sidecar, checked; None without one."""
    side = path.with_name(sidecar_path_name(path.name))
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{side.name}: cannot read it ({one_line(exc)})") from None
    row, triton = (data.get("row"), data.get("triton")) if isinstance(data, dict) else (0, 0)
    if not (row is None or (isinstance(row, str) and TAG_RE.fullmatch(row))) or not isinstance(triton, str):
        raise InputError(f'{side.name}: expected {{"row": ID or null, "triton": REQUIREMENT}}')
    try:
        Requirement(triton)
    except InvalidRequirement:
        raise InputError(f"{side.name}: triton {triton!r} is not a requirement") from None
    return {"row": row, "triton": triton}


def rows_of(paths: list, facts: list, matrix_path: Path) -> list:
    """{"row", "triton"} per wheel; the matrix is read only when a wheel has no sidecar."""
    found, rows = [], None
    for path, fact in zip(paths, facts):
        side = sidecar(path)
        if side is None:
            rows = load_rows(matrix_path) if rows is None else rows
            side = matrix_row(fact, rows)
        found.append(side)
    return found


# ---- the release and its manifest -----------------------------------------------------------

def check_url_prefix(prefix: str, option: str = "--download-url") -> str:
    """URL_PREFIX + filename must be a URL pip and the installer can fetch."""
    parts = urlsplit(prefix)
    bad = (parts.scheme not in URL_SCHEMES or (parts.scheme != "file" and not parts.netloc)
           or parts.query or parts.fragment or not prefix.endswith("/")
           or any(c.isspace() or c in "\"'<>\\" for c in prefix))
    if bad:
        example = ("https://OWNER.github.io/NAME/" if option == "--site-url"
                   else "https://github.com/OWNER/NAME/releases/download/TAG/")
        raise InputError(f"{option} {prefix!r}: give an http(s):// or file:// URL of the folder "
                         f"that ends with '/', such as {example}")
    return prefix


def git_head() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and GIT_SHA_RE.fullmatch(sha) else None


def created_at() -> str:
    """SOURCE_DATE_EPOCH (reproducible builds) or now, as 2026-12-01T12:00:00Z."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw and not raw.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH={raw!r}: give seconds since 1970 (an integer)")
    try:
        when = (datetime.datetime.fromtimestamp(int(raw), datetime.timezone.utc) if raw
                else datetime.datetime.now(datetime.timezone.utc))
    except (OverflowError, OSError, ValueError):
        raise InputError(f"SOURCE_DATE_EPOCH={raw!r} is out of range") from None
    return when.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_of(facts: list, tag: str | None, git_sha: str | None) -> dict:
    versions = sorted({f["public"] for f in facts})
    if len(versions) != 1:
        raise InputError(f"wheels of several versions ({', '.join(versions)}): one release folder "
                         "per version")
    tag = tag or f"v{versions[0]}"
    if not TAG_RE.fullmatch(tag):
        raise InputError(f"--tag {tag!r}: letters, digits and . _ + - only")
    recorded = {f["git_sha"] for f in facts}
    sha = (git_sha or "").lower() or (recorded.pop() if len(recorded) == 1 and None not in recorded
                                      else git_head())
    if not sha or not GIT_SHA_RE.fullmatch(sha):
        raise InputError(f"--git-sha {sha!r}: give the 40-hex commit the wheels were built from"
                         if sha else "no git sha (wheels disagree and no git checkout): pass --git-sha")
    return {"tag": tag, "version": versions[0], "git_sha": sha, "created": created_at()}


def entry_of(facts: dict, row: dict, url_prefix: str, release: dict) -> dict:
    variant = f"{facts['cuda']}-torch{facts['name_torch']}{'andhigher' if facts['andhigher'] else ''}"
    entry = {"filename": facts["filename"], "url": url_prefix + facts["filename"],
             "sha256": facts["sha256"], "size": facts["size"], "version": facts["version"],
             "row": row["row"], "platform": facts["platform"], "platform_tag": facts["platform_tag"],
             "python_tag": facts["python_tag"], "abi_tag": facts["abi_tag"],
             "requires_python": facts["requires_python"], "abi_flavour": facts["abi_flavour"],
             "torch": facts["torch"], "torch_and_higher": facts["torch_and_higher"],
             "cuda": facts["cuda"], "archs": facts["archs"], "triton": row["triton"],
             "variant": variant, "index": f"{variant}/simple/"}
    # Extra fields (allowed by the schema): which release it came in and the commit it was built from.
    entry.update(release=release["tag"], git_sha=facts["git_sha"] or release["git_sha"])
    return entry


def wheel_paths(wheeldir: Path) -> list:
    if not wheeldir.is_dir():
        raise InputError(f"{wheeldir}: no such folder; give the folder that holds the release's wheels")
    paths = sorted(p for p in wheeldir.iterdir() if p.name.endswith(".whl") and p.is_file())
    if not paths:
        raise InputError(f"{wheeldir}: no .whl files in it")
    return paths


def release_manifest(wheeldir: Path, url_prefix: str, tag, git_sha, matrix_path: Path) -> dict:
    paths = wheel_paths(wheeldir)
    facts = [read_wheel(p) for p in paths]
    rows = rows_of(paths, facts, matrix_path)
    release = release_of(facts, tag, git_sha)
    wheels = [entry_of(f, r, url_prefix, release) for f, r in zip(facts, rows)]
    return {"schema_version": SCHEMA_VERSION, "project": PROJECT, "release": release,
            "releases": [release], "wheels": wheels}


# ---- merging with the site's manifest -------------------------------------------------------

def read_site_manifest(path: Path) -> dict:
    """The site's existing manifest, checked enough that merging and writing cannot go wrong."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes: not a manifest")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; leave out --merge to start a new site") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it for --merge ({one_line(exc)})") from None
    problem = manifest_problem(data)
    if problem:
        raise InputError(f"{path}: {problem}; fix or remove it, or leave out --merge")
    return data


def manifest_problem(data) -> str | None:
    if not isinstance(data, dict) or data.get("project") != PROJECT:
        return f"not a {PROJECT} manifest"
    if data.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version {data.get('schema_version')!r}, this make_index writes {SCHEMA_VERSION}"
    releases = data.get("releases", [data.get("release")])
    if not isinstance(releases, list) or not all(isinstance(r, dict) and isinstance(r.get("tag"), str)
                                                 for r in releases):
        return "its releases are not a list of {\"tag\": ...} objects"
    wheels = data.get("wheels")
    if not isinstance(wheels, list):
        return "no wheels list"
    for w in wheels:
        problem = entry_problem(w)
        if problem:
            return problem
    return None


STR_KEYS = ("filename", "url", "sha256", "version", "platform", "platform_tag", "python_tag", "abi_tag",
            "abi_flavour", "torch", "cuda", "variant", "index")
OPTIONAL_STR_KEYS = ("row", "requires_python", "triton")


def entry_problem(w) -> str | None:
    """What makes an entry of an existing manifest unusable for the pages, or None."""
    if not isinstance(w, dict) or not all(k in w for k in WHEEL_KEYS):
        return "a wheel entry lacks fields of shared/MANIFEST.md"
    name = w["filename"]
    wrong = [k for k in STR_KEYS if not isinstance(w[k], str)]
    wrong += [k for k in OPTIONAL_STR_KEYS if not (w[k] is None or isinstance(w[k], str))]
    wrong += [] if isinstance(w["torch_and_higher"], bool) else ["torch_and_higher"]
    wrong += [] if isinstance(w["size"], int) and not isinstance(w["size"], bool) else ["size"]
    archs = w["archs"]
    wrong += [] if isinstance(archs, list) and all(isinstance(a, str) for a in archs) else ["archs"]
    if wrong:
        return f"wheel {name!r}: {', '.join(wrong)} of the wrong type"
    if not name.endswith(".whl") or "/" in name or "\\" in name:
        return f"wheel file name {name!r}"
    if not SHA256_RE.fullmatch(w["sha256"]):
        return f"{name}: sha256 {w['sha256']!r} is not 64 lowercase hex digits"
    if not INDEX_RE.fullmatch(w["index"]):
        return f"{name}: index {w['index']!r} is not VARIANT/simple/"
    if urlsplit(w["url"]).scheme not in URL_SCHEMES:
        return f"{name}: url {w['url']!r} is not http(s):// or file://"
    return None


def merged(old: dict, new: dict) -> dict:
    """The site's manifest with this release added; a file name may only come back unchanged."""
    by_name = {w["filename"]: w for w in old["wheels"]}
    for w in new["wheels"]:
        before = by_name.get(w["filename"])
        if before is not None and before["sha256"] != w["sha256"]:
            raise InputError(f"{w['filename']}: the site already has it with sha256 {before['sha256']}, "
                             f"this file is {w['sha256']}: a published file must not change; "
                             "publish a new version instead")
        by_name[w["filename"]] = w
    tag = new["release"]["tag"]
    releases = [r for r in old.get("releases", [old.get("release")]) if r.get("tag") != tag]
    return {**new, "releases": releases + [new["release"]],
            "wheels": [by_name[name] for name in sorted(by_name)]}


# ---- writing --------------------------------------------------------------------------------

def write_text(path: Path, text: str) -> None:
    """Whole files only: a reader (or a failed run) never sees half a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def sums_text(wheels: list) -> str:
    return "".join(f"{w['sha256']}  {w['filename']}\n" for w in sorted(wheels, key=lambda w: w["filename"]))


def simple_root_page() -> str:
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n"
            f"<title>Simple index</title>\n</head>\n<body>\n<a href=\"{PROJECT}/\">{PROJECT}</a>\n"
            "</body>\n</html>\n")


def project_page(wheels: list) -> str:
    """PEP 503 links: pip checks #sha256= and skips files whose data-requires-python excludes it."""
    links = []
    for w in sorted(wheels, key=lambda w: w["filename"]):
        href = html.escape(f"{w['url']}#sha256={w['sha256']}", quote=True)
        requires = w.get("requires_python")
        attr = f' data-requires-python="{html.escape(requires, quote=True)}"' if isinstance(requires, str) else ""
        links.append(f'<a href="{href}"{attr}>{html.escape(w["filename"])}</a><br>\n')
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n"
            f"<title>Links for {PROJECT}</title>\n</head>\n<body>\n<h1>Links for {PROJECT}</h1>\n"
            + "".join(links) + "</body>\n</html>\n")


def json_for_script(data) -> str:
    """JSON that cannot end its <script> element early, whatever the strings hold."""
    return (json.dumps(data, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def wheel_table(wheels: list) -> str:
    """The static list of every wheel (the page without JavaScript still says what exists)."""
    rows = []
    for w in sorted(wheels, key=lambda w: (w["platform"], w["variant"], w["filename"])):
        python = w["python_tag"] + ("" if w["abi_flavour"] == "cpython" else " or newer")
        torch = w["torch"] + (" or newer" if w["torch_and_higher"] else "")
        cells = [w["platform"], python, torch, w["cuda"], " ".join(w["archs"]), w.get("triton") or ""]
        link = f'<a href="{html.escape(w["url"], quote=True)}">{html.escape(w["filename"])}</a>'
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + f"<td>{link}</td><td><code>{html.escape(w['index'])}</code></td></tr>")
    return "\n".join(rows)


def release_line(manifest: dict) -> str:
    tags = [r.get("tag") for r in manifest.get("releases", [manifest["release"]])]
    return "Releases: " + ", ".join(html.escape(str(t)) for t in tags)


def front_page(manifest: dict, site_url: str | None, installer: bool) -> str:
    data = {"manifest": manifest, "site_url": site_url, "installer": installer,
            "one_liner": matching.ONE_LINER}
    values = {"RELEASES": release_line(manifest), "TABLE": wheel_table(manifest["wheels"]),
              "ONE_LINER": html.escape(matching.ONE_LINER), "DATA": json_for_script(data)}
    # One pass: a value (a URL in the table) that happens to hold a marker stays as it is.
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values.get(m.group(1), m.group(0)),
                  TEMPLATE.read_text(encoding="utf-8"))


def write_site(site: Path, manifest: dict, site_url: str | None) -> list:
    """Every file of the site; returns the index paths written."""
    write_text(site / "manifest.json", manifest_text(manifest))
    indexes = sorted({w["index"] for w in manifest["wheels"]})
    for index in indexes:
        wheels = [w for w in manifest["wheels"] if w["index"] == index]
        write_text(site / index / "index.html", simple_root_page())
        write_text(site / index / PROJECT / "index.html", project_page(wheels))
    installer = INSTALLER.is_file()
    if installer:
        shutil.copyfile(INSTALLER, site / INSTALLER.name)
    write_text(site / "index.html", front_page(manifest, site_url, installer))
    return indexes


# ---- command line ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="make_index.py", description=__doc__.split("\n\n")[0])
    p.add_argument("wheeldir", type=Path, help="the release folder: its *.whl files")
    p.add_argument("--download-url", required=True, metavar="URL_PREFIX",
                   help="where the wheels are downloaded from; url = URL_PREFIX + filename")
    p.add_argument("--out", required=True, type=Path, metavar="SITE", help="the index site folder")
    p.add_argument("--merge", action="store_true", help="add to the releases of SITE/manifest.json")
    p.add_argument("--tag", help="release tag (default: v<version>)")
    p.add_argument("--git-sha", help="commit of the release (default: the wheels' GIT_SHA, else git HEAD)")
    p.add_argument("--site-url", help="the site's public URL for the commands on the page "
                                      "(default: wherever the page is opened from)")
    p.add_argument("--matrix", type=Path, default=None,
                   help="build_matrix.yaml for the row and triton of wheels without a sidecar")
    return p.parse_args(argv)


def run(args) -> None:
    url_prefix = check_url_prefix(args.download_url)
    if args.site_url is not None:
        check_url_prefix(args.site_url, "--site-url")
    if args.out.resolve() == args.wheeldir.resolve():
        raise InputError(f"--out {args.out} is WHEELDIR: give the site a folder of its own (both have "
                         "a manifest.json)")
    matrix_path = args.matrix or ROOT / "build_matrix.yaml"
    old = read_site_manifest(args.out / "manifest.json") if args.merge else None
    manifest = release_manifest(args.wheeldir, url_prefix, args.tag, args.git_sha, matrix_path)
    site_manifest = merged(old, manifest) if old is not None else manifest
    try:
        write_text(args.wheeldir / "SHA256SUMS", sums_text(manifest["wheels"]))
        write_text(args.wheeldir / "manifest.json", manifest_text(manifest))
        indexes = write_site(args.out, site_manifest, args.site_url)
    except OSError as exc:
        raise InputError(f"cannot write {exc.filename or args.out}: {exc.strerror or one_line(exc)}") from None
    print(f"{args.wheeldir}: SHA256SUMS and manifest.json for {len(manifest['wheels'])} wheels "
          f"of {manifest['release']['tag']}")
    print(f"{args.out}: {len(site_manifest['wheels'])} wheels in {len(indexes)} indexes "
          f"({', '.join(indexes)}) and index.html")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except InputError as exc:
        print(f"make_index: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0
