from glob import glob

from setuptools import find_packages, setup

package_name = "ros_anonymizer"

setup(
    name=package_name,
    version="0.1.0",
    # the runtime only: engines/ and training/ are separate distributions (their own pyproject.toml)
    packages=find_packages(include=["ros_anonymizer", "ros_anonymizer.*"]),
    package_data={"ros_anonymizer": ["models/*.onnx", "models/*.md", "resources/*.png", "interfaces/vision_msgs/*.msg"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "opencv-python-headless", "onnx", "onnxruntime", "pyyaml", "simplejpeg", "tqdm"],
    extras_require={"bag": ["rosbags>=0.11", "ray>=2.9"]},  # the bag tools; ray only for anonymize-archive
    zip_safe=True,
    maintainer="ros_anonymizer maintainers",
    maintainer_email="maintainers@ros-anonymizer.org",
    description="Learned face anonymization for robots (Ren, Lee and Ryoo, ECCV 2018).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "anonymizer_node = ros_anonymizer.node:main",
            "ros-anonymizer = ros_anonymizer.cli:main",
        ],
    },
)
