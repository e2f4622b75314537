mod auth;
mod guarantees;
mod helpers;
mod hostile_values;
mod reading;
mod startup;
mod storing;
