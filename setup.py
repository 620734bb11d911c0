from setuptools import find_packages, setup

setup(
    name="ddncodec",
    version="0.1.0",
    description="A learned image codec built on Discrete Distribution Networks",
    packages=find_packages(include=["ddncodec", "ddncodec.*"]),
    # The shipped models travel inside the package (ddncodec/models links to the top-level
    # models/ in a checkout): the default, and versions 9 and 10 for the files they made (each
    # stores only its own filters and reads the rest from the default's file beside it); so do the
    # published curves bench draws against.
    package_data={
        "ddncodec": [
            "models/default.safetensors",
            "models/default.md",
            "models/v9.safetensors",
            "models/v9.md",
            "models/v10.safetensors",
            "models/v10.md",
            "models/v11.safetensors",
            "models/v11.md",
            "models/v12.safetensors",
            "models/v12.md",
            "level_priors.npz",
            "level_priors_11.npz",
        ],
        "ddncodec.bench": ["published/kodak/*.json", "published/kodak/README.md"],
    },
    license="MIT",
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "constriction>=0.5,<0.6",
        "pillow>=10",
        "click>=8.1",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "threadpoolctl>=3.1",
    ],
    extras_require={
        "bench": ["matplotlib>=3.7", "pytorch-msssim>=1.0", "pillow-jxl-plugin>=1.3", "scipy>=1.10"],
        # setuptools: tests/test_package.py builds a wheel without build isolation
        # scikit-image: the tests' independent reference for ddncodec.metrics.psnr
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.5", "setuptools>=70.1", "scikit-image>=0.21"],
        # ddncodec.batch's engine "ray" (--engine ray): plain Ray actors, no Ray Data needed
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["ddncodec = ddncodec.cli:main"]},
)
