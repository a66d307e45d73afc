"""The OpenFlamingo model family (the paper's): the family module (`family`), the model factory
(`factory`) and its decoding (`decode`). Nothing is imported here, so the registry stays torch-free."""
