"""One module or package per operation (expose, convert, inspect, plot, stream/, seq2seq/,
splice/, extract/), each supplying only what is its own over io -> graph -> check; state_io is
the state I/O a model already has, where every operation starts.
"""
