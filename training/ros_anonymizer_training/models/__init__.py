"""Networks: anonymizer M, face discriminator D, action detector A."""
