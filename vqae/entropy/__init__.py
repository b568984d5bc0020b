"""The entropy model of the code indices, used by the models and the codec alike.

- `prior`: integer frequency tables over the indices and their contexts (buffers of the model)
- `fit`: fitting those tables on a split, each stage's context chosen by held-out bits
- `coder`: constriction's ANS coder over those tables
"""
