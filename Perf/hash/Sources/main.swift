print("fansync-hashbench")
