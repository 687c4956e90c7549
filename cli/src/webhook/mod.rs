//! `polc webhook`: a validating admission webhook for the policy kinds polc reads.
//!
//! [`review`] judges one AdmissionReview; [`server`] serves it over HTTPS.

pub mod cluster;
pub mod review;
pub mod server;
pub mod store;
