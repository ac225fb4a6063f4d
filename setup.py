"""Build script: metadata lives in setup.cfg; this file only adds the optional C speedups.

``syncws._speedups`` (``syncws/speedups.c``) accelerates masking, the parsing
of the common frames and the serializing of small ones.  It is optional: when
no working C compiler is available the build prints a warning and syncws
installs without it, falling back to pure Python at run time (see
``syncws/accelerator.py``).  Set ``SYNCWS_REQUIRE_SPEEDUPS=1`` to make a failed
build an error instead, as CI does so that a broken extension cannot go
unnoticed.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    # setuptools >= 59 re-exports the distutils errors under these names.
    from setuptools.errors import CCompilerError, ExecError, PlatformError
except ImportError:  # older setuptools, with distutils still in the stdlib
    from distutils.errors import CCompilerError
    from distutils.errors import DistutilsExecError as ExecError
    from distutils.errors import DistutilsPlatformError as PlatformError

# What a missing or broken compiler raises: no compiler configured
# (PlatformError), compiler not found or failing to run (ExecError, OSError),
# compilation or link failure (CCompilerError).
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)

REQUIRE_SPEEDUPS = os.environ.get("SYNCWS_REQUIRE_SPEEDUPS", "") not in ("", "0")


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns instead of failing when the C build fails."""

    def run(self) -> None:
        """Build all extensions, tolerating a missing compiler.

        Raises:
            PlatformError: If no compiler is available and
                ``SYNCWS_REQUIRE_SPEEDUPS`` is set.
        """
        try:
            super().run()
        except BUILD_ERRORS as exc:
            self._give_up(exc)

    def build_extension(self, ext: Extension) -> None:
        """Build one extension, tolerating compile and link errors.

        Args:
            ext: The extension to build.

        Raises:
            CCompilerError: If compilation fails and
                ``SYNCWS_REQUIRE_SPEEDUPS`` is set.
        """
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            # A module left by an earlier build (build/lib, or the source
            # tree with --inplace) would otherwise be installed, or imported,
            # in place of the one that failed, though built from older code.
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        """Report a failed build, then re-raise it only if speedups are required.

        Args:
            exc: The error the build raised.

        Raises:
            Exception: ``exc`` itself, when ``SYNCWS_REQUIRE_SPEEDUPS`` is set.
        """
        if REQUIRE_SPEEDUPS:
            raise exc
        # A build script has no logging configured; stderr is where pip and
        # setuptools users look (pip shows it with -v).
        sys.stderr.write(
            "WARNING: could not build the optional C extension "
            f"syncws._speedups ({type(exc).__name__}: {exc}).\n"
            "syncws will work, using its slower pure-Python masking and framing.\n"
        )


setup(
    ext_modules=[
        Extension(
            "syncws._speedups",
            sources=["syncws/speedups.c"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
