"""Build script: metadata lives in setup.cfg; this file only adds the optional C speedups."""

from setuptools import setup

setup()
