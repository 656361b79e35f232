"""Builds fastconv._C: the CPU kernels always, the CUDA kernels when possible.

Switches (environment variables):
  FASTCONV_CUDA=1   build the CUDA kernels or fail loudly
  FASTCONV_CUDA=0   never build them
  (unset)           build them when torch is a CUDA build and nvcc's major
                    version matches torch.version.cuda (no GPU is needed)
  TORCH_CUDA_ARCH_LIST  GPU targets, default "7.5;8.0;8.6;8.9;9.0+PTX"
  MAX_JOBS          parallel compile jobs (ninja)
  FASTCONV_DEBUG=1  -O0 -g, for gdb and sanitizers
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import setup

# pyproject.toml's `license = "BSD-3-Clause"` (the SPDX string form) needs setuptools 77; an
# older one fails while reading it with a schema error that does not say so.
_SETUPTOOLS_MAJOR = int(re.match(r"\d+", setuptools.__version__).group())
if _SETUPTOOLS_MAJOR < 77:
    sys.exit(f"fastconv needs setuptools 77 or newer to build (found {setuptools.__version__}): "
             "pip install -U 'setuptools>=77', or build with `pip install .`, which fetches it")


def _find_cuda_home():
    """The toolkit folder (with include/cuda_runtime.h). nvcc on PATH may be a wrapper script in
    /usr/local/bin, from which torch would guess /usr/local; prefer a real toolkit folder."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    candidates += [Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    for home in candidates:
        if (home / "include" / "cuda_runtime.h").exists() and (home / "bin" / "nvcc").exists():
            os.environ["CUDA_HOME"] = str(home)
            return


_find_cuda_home()

import torch  # noqa: E402  (after CUDA_HOME is settled: cpp_extension reads it on import)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).parent.resolve()
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def nvcc_major_version():
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+)\.", out)
    return int(match.group(1)) if match else None


def want_cuda():
    switch = os.environ.get("FASTCONV_CUDA", "").strip()
    if switch == "0":
        return False
    reasons = []
    if torch.version.cuda is None:
        reasons.append("the installed torch is not a CUDA build")
    nvcc = nvcc_major_version()
    if nvcc is None:
        reasons.append("nvcc was not found (set CUDA_HOME)")
    elif torch.version.cuda is not None and nvcc != int(torch.version.cuda.split(".")[0]):
        reasons.append(f"nvcc is CUDA {nvcc} but torch was built with CUDA {torch.version.cuda}")
    if not reasons:
        return True
    if switch == "1":
        sys.exit("FASTCONV_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(reasons))
    print("fastconv: building without CUDA kernels: " + "; ".join(reasons), file=sys.stderr)
    return False


def nvidia_wheel_include_flags():
    """The nvidia wheels' include folder (site-packages/nvidia/cu13/include), where ATen's CUDA
    headers find cuBLAS and cuSPARSE. Searched *after* the toolkit's own headers (-idirafter):
    the wheel also ships a partial cuda_runtime_api.h that must not shadow the toolkit's."""
    dirs = {d for base in sys.path for d in glob.glob(os.path.join(base, "nvidia", "cu*", "include"))}
    return [flag for d in sorted(dirs) if os.path.isdir(d) for flag in ("-idirafter", d)]


def shared_cxx_runtime():
    """The link arguments that tie _C to the shared C++ runtime torch itself runs on.

    Some images ship only libstdc++.a beside their g++ (no libstdc++.so for the linker): the
    link then copies the C++ runtime into _C, and its iostreams and locale facets, a second copy
    beside torch's libstdc++.so.6, crash at the first number read or formatted (an error message
    built by TORCH_CHECK included). Naming the libstdc++.so.6 this process has loaded (torch's)
    resolves every C++ runtime symbol from it first; where the toolchain links the shared one
    anyway, this changes nothing."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as maps:
            # The mapped file's real name, libstdc++.so.6.0.33 say: the link records its soname.
            paths = {line.split()[-1] for line in maps if "/libstdc++.so.6" in line}
    except OSError:
        return []
    return sorted(paths)[:1]


def sources(*patterns):
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


def extension():
    debug = os.environ.get("FASTCONV_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -g0: Python's own CFLAGS bring -g, and debug info over torch's headers costs
    # about a third of a release build's host compile time and 50 MB of library.
    host_opt = opt if debug else [*opt, "-g0"]
    # -fopenmp: ATen's at::parallel_for is an inline `#pragma omp parallel` in
    # torch's headers; compiled without it, every CPU kernel runs on one thread.
    # (-Wno-unknown-pragmas is for the `#pragma unroll` of the CUDA kernels the
    # SIMT runtime compiles as C++.)
    cxx = ["-std=c++20", *host_opt, "-fvisibility=hidden", "-fopenmp", "-Wno-unknown-pragmas"]
    cpp_sources = sources("csrc/*.cpp", "csrc/python/*.cpp", "csrc/ops/*.cpp", "csrc/autograd/*.cpp", "csrc/cpu/*.cpp",
                          "csrc/simt/*.cpp", "csrc/cuda/*_simt.cpp")
    include_dirs = [str(ROOT / "csrc")]
    if want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
        return CUDAExtension(
            "fastconv._C",
            cpp_sources + sources("csrc/cuda/*.cu"),
            include_dirs=include_dirs,
            define_macros=[("FASTCONV_WITH_CUDA", None)],
            extra_link_args=["-fopenmp", *shared_cxx_runtime()],
            extra_compile_args={
                "cxx": cxx + nvidia_wheel_include_flags(),
                "nvcc": [*opt, "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"],
            },
        )
    return CppExtension("fastconv._C", cpp_sources, include_dirs=include_dirs,
                        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp", *shared_cxx_runtime()])


class BuildFastconv(BuildExtension):
    """torch's ninja build, in a build folder that persists between builds.

    pip's editable install hands every build a fresh temporary folder, so each
    `pip install -e .` would recompile every unit. Pinning the object folder
    under build/ lets ninja rebuild only what changed (its dependency files
    track the headers); the link step always runs.
    Also writes fastconv/_build_config.py: what the extension was built
    against, which `import fastconv` checks before loading it.
    """

    def finalize_options(self):
        super().finalize_options()
        tag = f"{sys.implementation.cache_tag}-torch{torch.__version__}"
        self.build_temp = str(ROOT / "build" / f"temp-{tag}")

    def run(self):
        super().run()
        # Beside the extension, and only once it is built (a failed rebuild must not record a
        # torch the old extension was not built for): the package folder for in-place
        # (editable) builds, the build folder that becomes the wheel otherwise.
        package_dir = Path(self.get_ext_fullpath(self.extensions[0].name)).parent
        write_build_config(self.extensions[0], package_dir)


def write_build_config(ext, package_dir):
    cuda = any(src.endswith(".cu") for src in ext.sources)
    lines = [
        '"""What fastconv._C was built against (written by setup.py)."""',
        f"TORCH_VERSION = {torch.__version__!r}",
        f"CUDA_VERSION = {torch.version.cuda if cuda else None!r}",
        f"CUDA_ARCHS = {os.environ.get('TORCH_CUDA_ARCH_LIST', '') if cuda else ''!r}",
    ]
    text = "\n".join(lines) + "\n"
    package_dir.mkdir(parents=True, exist_ok=True)
    path = package_dir / "_build_config.py"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildFastconv.with_options(use_ninja=True)},
)
