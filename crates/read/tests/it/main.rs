mod auth;
mod guarantees;
mod helpers;
mod reading;
mod storing;
