"""Build script for Leeky Raft on Twisted."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="leeky-twisted",
    version="0.1.0",
    description="A Raft consensus key-value service on Twisted",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(exclude=["tests", "tests.*"]), "twisted.plugins"],
    package_data={
        "twisted": ["plugins/leekyraft_plugin.py", "plugins/leekyexecutor_plugin.py"],
        # the dashboard's page, script and style (issue 17)
        "leeky_twisted.dashboard": ["static/*.html", "static/*.js", "static/*.css"],
    },
    include_package_data=True,
    install_requires=[
        "twisted>=23.10,<27",
        "txJSON-RPC>=0.5",
        "treq>=23.11",
        "zope.interface>=6.0",
        # /metrics in the Prometheus text format (issue 9)
        "prometheus-client>=0.17",
        # TLS with mutual authentication for peers and clients (issue 9)
        "pyOpenSSL>=24.0",
        "service-identity>=24.1",
        "cryptography>=42",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6",
            "ruff>=0.5",
            "pyyaml>=6",  # reads docker-compose.yml in its test
            "wheel",  # builds the package in the packaging test
            "mypy>=1.8",  # strict typing of the core, storage and interfaces
            "mypy-zope>=1.0",
            "matplotlib>=3.7",  # the plots are tested in CI
            "selenium>=4.10",  # drives headless Chromium in the dashboard's browser tests
        ],
        # `leekyraft bench --plot` and the report folder of `chaos`/`verify`;
        # the node never needs it.
        "plots": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["leekyraft=leeky_twisted.cli:main"]},
)
