"""The one build step pyproject.toml cannot say: the repository's top-level conf/ (the Hydra configs) ships
inside the package as `ssimctr/conf`, where an installed ssimctr finds it (ssimctr.cli.main.CONFIG_DIR).
Everything else about the package is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

CONF = ["ssimctr.conf", *(f"ssimctr.conf.{group}" for group in find_namespace_packages(where="conf"))]

setup(
    packages=[*find_namespace_packages(include=["ssimctr", "ssimctr.*"]), *CONF],
    package_dir={"ssimctr.conf": "conf"},  # and so its groups: conf/<group> is ssimctr/conf/<group>
    package_data={package: ["*.yaml"] for package in CONF},
)
