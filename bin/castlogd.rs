fn main() {
    env_logger::init();
    eprintln!("castlogd: not yet wired");
    std::process::exit(1);
}
