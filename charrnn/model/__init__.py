"""The model: heads, regularisers, the recurrent network, its closed-form sizes and the checkpoint format."""
