//! pest grammars of polc's small languages (label selector expressions, `.polt` policy
//! tests) and their typed trees. The grammars arrive with the issues that use them.
