"""The seed's demo: two topics, q1 and q2, and a handler for each."""
