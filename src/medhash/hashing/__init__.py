"""Binary codes: kernel LSH (:mod:`.kernel_lsh`), PCA-sign, ITQ and the trained hash (:mod:`.hashers`), and
Hamming distances."""
