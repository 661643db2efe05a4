"""Build script: the pure-Python package plus the cffi extension in _native/."""
from setuptools import find_packages, setup

setup(
    name="isolate",
    version="0.1.0",
    description="Linux process isolation (namespaces, mounts, PID 1) as a Python library",
    packages=find_packages(include=["isolate", "isolate.*"]),
    python_requires=">=3.10",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["_native/build.py:ffibuilder"],
    install_requires=["cffi>=1.15", "attrs>=22.2", "psutil>=5.9"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["isolate = isolate.cli:main"]},
)
