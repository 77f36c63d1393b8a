"""The ``text-to-image`` task: captioned images, a frozen text encoder and conditional diffusion UNets;
``generate(path, prompts)`` samples a saved model from free-text prompts."""

from automl_prune.text_to_image.prompts import generate

__all__ = ["generate"]
