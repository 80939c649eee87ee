# Install kagglekit from the attached kagglekit dataset, offline, leaving the image's own packages as they are.
# WHEEL_DIR: the dataset's folder, or "auto": the one kagglekit-*.whl under the input root, at any depth. The kit's
# wheel goes in with --no-deps; a bundled wheels/*.whl (build_wheel.sh --with-deps) only when the image lacks that
# package altogether: nothing of the image is upgraded or replaced. Then kagglekit checks its requirements.
import importlib, importlib.metadata, importlib.util, os, re, subprocess, sys


def _kit_wheel(root, walk):
    """The kagglekit-*.whl in root (with walk: in any folder under it, bundled wheels/ aside), or None."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if walk and d != "wheels" and not d.startswith(".")]
        for name in files:
            if name.startswith("kagglekit-") and name.endswith(".whl"):
                with open(os.path.join(folder, name), "rb") as f:
                    found.setdefault(f.read(), os.path.join(folder, name))  # a dataset mounted twice holds one wheel
    if len(found) > 1:
        raise RuntimeError(f"{len(found)} different kagglekit wheels under {root}: {', '.join(sorted(found.values()))}. "
                           "Set WHEEL_DIR to the folder of the one to install, or detach the other dataset.")
    return next(iter(found.values()), None)


def _version_imported():
    """The version of the kagglekit that `import kagglekit` would load, read from its __init__.py; None if none."""
    spec = importlib.util.find_spec("kagglekit")
    if spec is None or not spec.origin:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)[1]


def _installed(wheel_file):
    """The installed version of the wheel's distribution (its file name's first part, normalised per PEP 503), or None."""
    try:
        return importlib.metadata.version(re.sub(r"[-_.]+", "-", os.path.basename(wheel_file).split("-")[0]).lower())
    except importlib.metadata.PackageNotFoundError:
        return None


root = (os.environ.get("KAGGLEKIT_INPUT_ROOT") or "/kaggle/input") if WHEEL_DIR == "auto" else WHEEL_DIR
wheel, version = _kit_wheel(root, walk=WHEEL_DIR == "auto"), _version_imported()
wheel_version = wheel and os.path.basename(wheel).split("-")[1]
if wheel is None and version is None:
    raise FileNotFoundError(f"no kagglekit-*.whl {'under' if WHEEL_DIR == 'auto' else 'in'} {root}: attach the kagglekit "
                            "dataset built by build_wheel.sh (Add Input), or set WHEEL_DIR to its folder.")
if wheel is None:
    print(f"no kagglekit wheel in {root}: using the kagglekit {version} that this Python imports")
elif version == wheel_version:
    print(f"kagglekit {version} is installed already: nothing to install")
else:
    bundled_dir = os.path.join(os.path.dirname(wheel), "wheels")
    names = sorted(os.listdir(bundled_dir)) if os.path.isdir(bundled_dir) else []
    bundled = [os.path.join(bundled_dir, name) for name in names if name.endswith(".whl")]
    present = {path: _installed(path) for path in bundled}
    missing = [path for path in bundled if present[path] is None]
    # --no-deps: pip resolves nothing, so no package of the image changes; --force-reinstall: a kagglekit of
    # another version, or one whose files are gone, is replaced
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
                          "--disable-pip-version-check", wheel, *missing], capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install --no-index --no-deps {' '.join([wheel, *missing])} failed:\n{pip.stdout}{pip.stderr}")
    for path in [wheel, *missing]:
        print(f"installed {os.path.basename(path)}")
    for path in bundled:
        if present[path] is not None:
            print(f"left alone {os.path.basename(path)}: the image has version {present[path]}")
    importlib.invalidate_caches()
    for module in [m for m in sys.modules if m == "kagglekit" or m.startswith("kagglekit.")]:
        del sys.modules[module]  # a kagglekit imported earlier in this kernel: the import below reads the new one

import kagglekit
from kagglekit.requirements import check_requirements

if wheel is not None and kagglekit.__version__ != wheel_version:
    raise RuntimeError(f"import kagglekit loads version {kagglekit.__version__} from {os.path.dirname(kagglekit.__file__)}, "
                       f"not the installed {os.path.basename(wheel)}: that folder comes first on sys.path; move or rename it.")
check_requirements()  # raises naming each requirement that is missing or outside its range, and the fix
print("kagglekit", kagglekit.__version__, "from", os.path.dirname(kagglekit.__file__))
