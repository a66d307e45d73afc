"""The SASRec model family: the family module (`family`), the network (`net`) and its training recipe
(`recipe`). Nothing is imported here, so the registry stays torch-free."""
