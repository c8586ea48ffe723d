"""Cross-domain transfer for the coldest requests: a user with no target history but a history
in another domain (thaw/transfer/data.py for the data and split; emcdr.py and ptupcdr.py one
paper each, baselines.py the models they must beat; synthetic.py a planted pair of domains for
tests). The protocol and the negative-transfer alarm are an evaluation: thaw/eval/cross_domain.py."""

from thaw.transfer.data import (
                                BUILT_IN,
                                CrossDomainDataset,
                                align,
                                cross_domain_split,
                                from_files,
                                genre_domains,
                                load_cross_domain,
                                permuted_source,
)

__all__ = ["BUILT_IN", "CrossDomainDataset", "align", "cross_domain_split", "from_files",
           "genre_domains", "load_cross_domain", "permuted_source"]
