"""`noisy_student` in the registry: the offline Noisy Student train step (`pseudolabel.noisy_student`,
where it has always lived, so existing imports keep working)."""

from pseudolabel.noisy_student import NoisyStudent

__all__ = ["NoisyStudent"]
