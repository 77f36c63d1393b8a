"""The ``text-to-image`` task: captioned images, a frozen text encoder and conditional diffusion UNets."""
