"""Sample photos that ship inside scikit-image and scikit-learn.

Used by ``clipseek demo``, the tests and the quality benchmarks. Only natural photos (and photo-like
scientific images) are listed; synthetic test patterns (chessboard, colour wheel, phantom, logo),
the blurred clock, the tiny microaneurysm crop and the right half of the motorcycle stereo pair
(a near-duplicate of the left one) are left out.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelUnavailable

SAMPLES_HINT = "pip install 'clipseek[samples]'"


class SamplesUnavailable(ModelUnavailable):
    """scikit-image or scikit-learn (which ship the sample photos) is not installed."""


#: (id, package, file name, short English caption)
SAMPLE_PHOTOS: tuple[tuple[str, str, str, str], ...] = (
    ("astronaut", "skimage", "astronaut.png", "an astronaut in a space suit with a flag"),
    ("camera", "skimage", "camera.png", "a man with a camera on a tripod (black and white)"),
    ("chelsea", "skimage", "chelsea.png", "a tabby cat"),
    ("coffee", "skimage", "coffee.png", "a cup of coffee on a saucer"),
    ("coins", "skimage", "coins.png", "old coins on a dark background (black and white)"),
    ("horse", "skimage", "horse.png", "the black silhouette of a horse"),
    ("hubble_deep_field", "skimage", "hubble_deep_field.jpg", "galaxies in deep space (Hubble)"),
    ("ihc", "skimage", "ihc.png", "stained tissue under a microscope"),
    ("moon", "skimage", "moon.png", "the surface of the moon with craters"),
    ("motorcycle", "skimage", "motorcycle_left.png", "a motorcycle"),
    ("page", "skimage", "page.png", "a page of printed text"),
    ("retina", "skimage", "retina.jpg", "the retina of a human eye"),
    ("rocket", "skimage", "rocket.jpg", "a rocket on the launch pad"),
    ("text", "skimage", "text.png", "handwritten text"),
    ("brick", "skimage", "brick.png", "a brick wall"),
    ("grass", "skimage", "grass.png", "grass"),
    ("gravel", "skimage", "gravel.png", "gravel"),
    ("china", "sklearn", "china.jpg", "a Chinese temple"),
    ("flower", "sklearn", "flower.jpg", "a flower"),
)


def _package_dir(package: str) -> Path:
    try:
        if package == "skimage":
            import skimage.data as mod

            return Path(mod.__file__).parent
        if package == "sklearn":
            import sklearn.datasets as mod2

            return Path(mod2.__file__).parent / "images"
    except ImportError as e:
        raise SamplesUnavailable(
            f"the sample photos ship with scikit-image and scikit-learn ({e}). Install them with: {SAMPLES_HINT}"
        ) from None
    raise ValueError(f"unknown sample package {package!r}")


def sample_photos() -> list[tuple[str, Path, str]]:
    """The sample photos as ``(id, path, caption)``, in a fixed order.

    Raises :class:`SamplesUnavailable` (a :class:`~clipseek.errors.ModelUnavailable`) when
    scikit-image or scikit-learn is missing, or when a listed file is not in the installed version.
    """
    out = []
    for pid, package, fname, caption in SAMPLE_PHOTOS:
        path = _package_dir(package) / fname
        if not path.is_file():
            raise SamplesUnavailable(
                f"sample photo {fname} is missing from the installed {package}; reinstall it with: {SAMPLES_HINT}"
            )
        out.append((pid, path, caption))
    return out
