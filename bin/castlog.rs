fn main() {
    env_logger::init();
    eprintln!("castlog: not yet wired");
    std::process::exit(1);
}
