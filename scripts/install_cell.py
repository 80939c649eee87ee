# Install kagglekit from the attached wheel dataset (offline) unless it is already importable. With a wheels/
# folder (build_wheel.sh --with-deps) its wheels are installed too, and pip checks the kit's requirements against
# them and the image, naming any it cannot satisfy; without one, only the kit (--no-deps), as the image has the rest.
import glob, importlib, os, subprocess, sys

try:
    import kagglekit
except ImportError:
    wheels = glob.glob(os.path.join(WHEEL_DIR, "kagglekit-*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(f"expected one kagglekit-*.whl in {WHEEL_DIR}, found {wheels}: "
                                "attach the kagglekit dataset (Add Input) or fix WHEEL_DIR")
    deps = sorted(glob.glob(os.path.join(WHEEL_DIR, "wheels", "*.whl")))
    if deps:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links",
               os.path.join(WHEEL_DIR, "wheels"), wheels[0], *deps]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", wheels[0]]
    subprocess.check_call(cmd)
    importlib.invalidate_caches()
    import kagglekit
print("kagglekit", kagglekit.__version__, "from", os.path.dirname(kagglekit.__file__))
