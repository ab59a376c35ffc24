from setuptools import find_packages, setup

setup(
    name="wszoo",
    version="0.1.0",
    description="MMDetection's GN+WS (Weight Standardization) detectors as native torchvision models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["wszoo", "wszoo.*"]),
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "requests>=2.28",
        "tqdm>=4.60",
        "filelock>=3.8",
    ],
    extras_require={
        # OpenCV gives MMDetection's exact (uint8, fixed-point) resize.
        "exact": ["opencv-python-headless>=4.8"],
        # COCO datasets and evaluation for `wszoo train` / `wszoo eval`.
        "train": ["pycocotools>=2.0.7"],
        "test": ["pytest>=7", "opencv-python-headless>=4.8", "pycocotools>=2.0.7"],
    },
    entry_points={"console_scripts": ["wszoo=wszoo.cli:main"]},
)
