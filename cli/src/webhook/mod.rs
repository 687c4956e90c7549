//! `polc webhook`: a validating admission webhook for the policy kinds polc reads.
//!
//! [`review`] judges one AdmissionReview; the HTTPS server around it comes next.

pub mod review;
